//! Model ids from the Hugging Face hub (`org/name`): resolved from the local HF cache first
//! (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`), downloaded otherwise unless
//! `HF_HUB_OFFLINE=1`. The result is an HF checkpoint directory (config.json, tokenizer.json,
//! safetensors), loaded like any other. Built with the `hub` cargo feature (on by default).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Whether `s` reads as a hub id (`org/name`) rather than a local path.
pub fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..")
        && !s.starts_with('.')
        && !s.ends_with(".gguf")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// Resolves `id` to a local checkpoint directory (a snapshot folder of the HF cache).
#[cfg(feature = "hub")]
pub fn resolve(id: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(id.to_string());
    if let Some(dir) = complete_snapshot(|f| cached.get(f)) {
        return Ok(dir);
    }
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if offline {
        return Err(Error::model(
            id,
            format!(
                "not in the local Hugging Face cache ({}) and HF_HUB_OFFLINE is set",
                cache.path().display()
            ),
        ));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| Error::model(id, format!("cannot reach the Hugging Face hub: {e}")))?;
    let repo = api.model(id.to_string());
    let get = |f: &str| {
        repo.get(f)
            .map_err(|e| Error::model(id, format!("downloading {f}: {e}")))
    };
    // The files an HF checkpoint directory needs, besides the weights.
    for f in ["config.json", "tokenizer.json"] {
        get(f)?;
    }
    let weights = match get("model.safetensors") {
        Ok(p) => p,
        Err(_) => {
            let index = get("model.safetensors.index.json")?;
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::model(&index, format!("invalid JSON: {e}")))?;
            let mut shards: Vec<String> = v["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|f| f.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in &shards {
                get(s)?;
            }
            index
        }
    };
    Ok(weights
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default())
}

/// Without the `hub` feature, a hub id is an error that says how to get one.
#[cfg(not(feature = "hub"))]
pub fn resolve(id: &str) -> Result<PathBuf> {
    Err(Error::model(
        id,
        "looks like a hub id, but this build has no hub support (cargo feature `hub`)",
    ))
}

/// The snapshot folder if config, tokenizer and weights (single file or index + shards) are all there.
#[cfg_attr(not(feature = "hub"), allow(dead_code))]
fn complete_snapshot(get: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let config = get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    get("tokenizer.json")?;
    if get("model.safetensors").is_some() {
        return Some(dir);
    }
    let index = get("model.safetensors.index.json")?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index).ok()?).ok()?;
    let all_there = v["weight_map"]
        .as_object()?
        .values()
        .filter_map(|f| f.as_str())
        .all(|f| get(f).is_some());
    all_there.then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert!(looks_like_hub_id("HuggingFaceTB/SmolLM2-135M"));
        assert!(looks_like_hub_id("gpt2/distil_v1.5"));
        for s in [
            "model.gguf",
            "./a/b",
            "/abs/path",
            "a/b/c",
            "a/b.gguf",
            "../x",
            "a/",
            "a b/c",
        ] {
            assert!(!looks_like_hub_id(s), "{s}");
        }
    }
}
