//! `tokenlens export-html`: one self-contained HTML file, the embedded viewer with the run's
//! manifest and the Parquet parts of the tables the viewer shows ([`VIEWED_TABLES`]) inlined,
//! opened from disk without a server.

use std::io;
use std::path::Path;

use super::assets::asset_text;
use super::listing::files_listing;
use crate::store::Manifest;
use crate::store::schema::{self, TableDef};

/// The tables the viewer reads (`activations` and `nmf_summary` are not shown).
pub static VIEWED_TABLES: &[&TableDef] = &[
    &schema::TOKENS,
    &schema::GENERATIONS,
    &schema::PREDICTIONS,
    &schema::LENS,
    &schema::LENS_TOPK,
    &schema::WATCH,
    &schema::SALIENCY,
    &schema::SALIENCY_COMPLETENESS,
    &schema::ATTENTION,
    &schema::ATTENTION_ROLLOUT,
    &schema::NMF_COMPONENTS,
    &schema::NMF_FACTORS,
    &schema::NMF_TOP_CONTEXTS,
    &schema::NEURON_TOP_CONTEXTS,
    &schema::NEURON_STATS,
    &schema::SIMILARITY,
    &schema::INTERVENTIONS,
    &schema::INTERVENTION_TOKENS,
    &schema::INTERVENTION_EDITS,
];

fn viewed(table: &str) -> bool {
    VIEWED_TABLES.iter().any(|t| t.name == table)
}

/// `tokenlens export-html`: one self-contained HTML file, the viewer with the run inlined (the
/// manifest and the parts of [`VIEWED_TABLES`], base64), opened from disk without a server.
/// Returns the HTML and the bytes of Parquet inlined.
/// Refuses (`InvalidInput`) when more than `max_bytes` of Parquet would be inlined.
pub fn export_html(run_dir: &Path, max_bytes: u64) -> io::Result<(String, u64)> {
    use base64::Engine;
    let root = run_dir.canonicalize()?;
    let mut files = files_listing(&root);
    let size: u64 = files["tables"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| viewed(name))
        .flat_map(|(_, parts)| parts.as_array().into_iter().flatten())
        .filter_map(|p| p["size"].as_u64())
        .sum();
    if size > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the tables the viewer shows are {:.0} MB, more than --max-mb {:.0}; one HTML file \
                 is for small runs (use `tokenlens view`, or raise --max-mb)",
                size as f64 / 1e6,
                max_bytes as f64 / 1e6
            ),
        ));
    }
    let mut parts = serde_json::Map::new();
    let mut total = 0u64;
    if let Some(tables) = files["tables"].as_object_mut() {
        tables.retain(|name, _| viewed(name));
        for list in tables.values() {
            for p in list.as_array().into_iter().flatten() {
                let path = p["path"].as_str().unwrap_or_default();
                let bytes = std::fs::read(root.join(path))?;
                total += bytes.len() as u64;
                parts.insert(
                    path.to_string(),
                    base64::engine::general_purpose::STANDARD
                        .encode(&bytes)
                        .into(),
                );
            }
        }
    }
    let manifest = std::fs::read_to_string(Manifest::path(&root)).ok();
    let embed = serde_json::json!({"files": files, "manifest": manifest, "parts": parts});
    // Inside <script>, `</` must not appear: JSON allows `<\/`.
    let embed = serde_json::to_string(&embed)
        .map_err(io::Error::other)?
        .replace("</", "<\\/");
    let js = asset_text("/viewer.js");
    if js.contains("</script") {
        return Err(io::Error::other(
            "viewer.js contains `</script`; cannot inline it",
        ));
    }
    let html = asset_text("/index.html")
        .replace(
            r#"<link rel="stylesheet" href="/viewer.css">"#,
            &format!("<style>\n{}</style>", asset_text("/viewer.css")),
        )
        .replace(
            r#"<script type="module" src="/viewer.js"></script>"#,
            &format!(
                "<script>window.TOKENLENS_EMBED = {embed};</script>\n<script type=\"module\">\n{js}</script>"
            ),
        );
    Ok((html, total))
}
