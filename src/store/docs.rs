//! docs/schema.md, rendered from the table definitions in `schema`. A unit test fails when the
//! committed file differs from the rendering; `TOKENLENS_BLESS=1 cargo test --lib store::docs`
//! rewrites it.

use super::schema::{ALL_TABLES, TableDef, doc_text, is_comparison_table, is_run_table};

const INTRO: &str = r#"# Output schema

<!-- Generated from the table definitions in src/store/schema/tables.rs by
     tokenlens::store::docs::render_schema_md. Do not edit by hand: change the definitions, then run
     `TOKENLENS_BLESS=1 cargo test --lib store::docs` to rewrite this file. -->

A run writes, in its run directory (`output.dir` of the pipeline):

- `manifest.json`: the pipeline, the model, versions, timings and each table's row count and parts;
- one folder per table, `<table>/part-<shard>-<seq>.parquet`. Tables are tidy (long): one row per
  observation, zstd-compressed, row groups of at most ~1M rows or 64 MB. A table written by an
  analysis always has at least one part, even with no rows.

Parts are written under a hidden temporary name (`.part-….parquet.tmp`), fsynced, then renamed: a
`*.parquet` file is always complete, and readers that glob `*.parquet` never see one being written.

## Reading a run

```python
import polars as pl
tokens = pl.read_parquet("runs/quickstart/tokens/*.parquet")

import pandas as pd
tokens = pd.read_parquet("runs/quickstart/tokens")        # a folder is read as one dataset

import duckdb
duckdb.sql("""
    SELECT t.doc_id, t.token, s.score
    FROM 'runs/quickstart/saliency/*.parquet' s
    JOIN 'runs/quickstart/tokens/*.parquet' t
      ON t.doc_id = s.doc_id AND t.position = s.source_position
""")
```

## Conventions

- **doc_id** (string) identifies a document (one prompt and its continuation) and joins every
  table. It is the dataset's `id_field` value if the pipeline names one (strings as they are,
  integers in decimal; ids must be unique), else the prompt's 0-based index in the dataset
  (`"0"`, `"1"`, ...; blank lines of jsonl and txt files are not prompts). `generations.index`
  gives the dataset order.
- **position** is 0-based in the document's sequence: the prompt's tokens (after truncation, if
  any), then the generated tokens. Padding never appears.
- **layer**: in `activations`, `attention`, `attention_rollout`, `nmf_*` and `neuron_*`, the
  0-based block index. In `lens`, `lens_topk` and `watch`, the residual stream index: 0 is the
  embedding output (the input of block 0), l is the output of block l - 1, and n_layers is the
  output of the last block (with the final norm, what the model itself predicts from). In
  `residuals`, the same index, but n_layers is the last block's output before the final norm.
- **rank** is 1-based: 1 is the most probable token (in `nmf_top_contexts` and
  `neuron_top_contexts`, the largest value).
- **prob** is a softmax probability over the whole vocabulary.
- Integers are signed (int32, int64); probabilities and scores are float32.
- Each column's description is also stored in the Parquet schema (field metadata `description`).
- `activations.values` and `residuals.values` are float16 when the analysis' `dtype` is `f16` (Parquet's FLOAT16
  logical type; polars 2.1, duckdb 2.0 and pyarrow 26 read it; older readers may not, so use `f32`
  for them).
"#;

/// What a comparison directory is, before its tables.
const COMPARISON: &str = r#"
## Comparison tables

`tokenlens compare RUN_A RUN_B --out DIR` ([compare.md](compare.md)) reads two finished runs and
writes the tables below into DIR, a *comparison directory* (`similarity` is also written into a
run, of its own layers, by `analyses.similarity`; the others never are): `comparison.json`
(`"kind": "comparison"`, both runs and their models, the matching's counts, what was compared
and what was skipped and why, each table's rows and parts, seconds per step) and one folder per
table with the same part files as a run's. Their `doc_id` is the documents' id in both runs
(documents are matched by it); suffixes `_a` and `_b` name the run a value comes from.
"#;

/// The whole of docs/schema.md.
pub fn render_schema_md() -> String {
    let mut s = String::from(INTRO);
    s.push_str("\n## Tables\n\n");
    let (run, comparison): (Vec<&TableDef>, Vec<&TableDef>) = ALL_TABLES
        .iter()
        .copied()
        .partition(|t| !is_comparison_table(t));
    for t in run.iter().chain(&comparison) {
        s.push_str(&format!(
            "- [`{}`](#{}): {}{}\n",
            t.name,
            t.name,
            match (is_comparison_table(t), is_run_table(t)) {
                (true, true) => "(comparison, and a run's) ",
                (true, false) => "(comparison) ",
                _ => "",
            },
            first_sentence(&doc_text(t.doc))
        ));
    }
    for t in run {
        render_table(&mut s, t);
    }
    s.push_str(COMPARISON);
    for t in comparison {
        render_table(&mut s, t);
    }
    s
}

fn first_sentence(text: &str) -> String {
    let end = text
        .find(": ")
        .or_else(|| text.find(". "))
        .unwrap_or(text.len());
    text[..end].trim_end_matches('.').to_string()
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn render_table(s: &mut String, t: &TableDef) {
    s.push_str(&format!("\n## {}\n\n{}\n\n", t.name, doc_text(t.doc)));
    s.push_str("| column | type | nullable | description |\n|---|---|---|---|\n");
    for c in t.columns {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.name,
            c.ty.doc_name(),
            if c.nullable { "yes" } else { "no" },
            cell(&doc_text(c.doc))
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// docs/schema.md must be exactly what the definitions render to.
    #[test]
    fn committed_schema_doc_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema.md");
        let rendered = render_schema_md();
        if std::env::var_os("TOKENLENS_BLESS").is_some() {
            std::fs::write(&path, &rendered).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != rendered {
            let line = committed
                .lines()
                .zip(rendered.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
            panic!(
                "docs/schema.md is stale (first difference at line {}); run \
                 `TOKENLENS_BLESS=1 cargo test --lib store::docs` and commit it",
                line + 1
            );
        }
    }

    #[test]
    fn every_table_and_column_is_documented() {
        let md = render_schema_md();
        for t in ALL_TABLES {
            assert!(md.contains(&format!("\n## {}\n", t.name)));
            assert!(!doc_text(t.doc).is_empty(), "{}", t.name);
            for c in t.columns {
                assert!(!doc_text(c.doc).is_empty(), "{}.{}", t.name, c.name);
                assert!(md.contains(&format!("| `{}` |", c.name)));
            }
        }
    }
}
