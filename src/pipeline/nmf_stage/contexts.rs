//! The `nmf_top_contexts` rows: for each factor, the positions where it is strongest, with the
//! text of the tokens before each (read from the run's `tokens` table).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arrow_array::{Int32Array, StringArray};

use super::scan::{KEY_BATCH_ROWS, Scan};
use crate::pipeline::error::Result;
use crate::pipeline::spec::NmfSpec;
use crate::store::reader::{batches, column, open_part, table_parts};
use crate::store::schema::TOKENS;

/// One row of `nmf_top_contexts`.
pub(super) struct TopContext {
    pub factor: usize,
    pub rank: usize,
    pub doc: u32,
    pub position: i32,
    pub value: f32,
    pub context: String,
}

/// For each factor, the `top_contexts` rows of X with the largest positive W (ties: earlier
/// row first), and the text of the `context_tokens` tokens before each and the token at it.
pub(super) fn top_contexts(
    run_dir: &Path,
    scan: &Scan,
    w: &[f32],
    k: usize,
    spec: &NmfSpec,
) -> Result<Vec<TopContext>> {
    let mut out = Vec::new();
    for j in 0..k {
        let mut v: Vec<(f32, usize)> = (0..scan.keys.len())
            .map(|r| (w[r * k + j], r))
            .filter(|x| x.0 > 0.0)
            .collect();
        let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if v.len() > spec.top_contexts {
            v.select_nth_unstable_by(spec.top_contexts - 1, order);
            v.truncate(spec.top_contexts);
        }
        v.sort_unstable_by(order);
        for (rank, (value, r)) in v.into_iter().enumerate() {
            let (doc, position) = scan.keys[r];
            out.push(TopContext {
                factor: j,
                rank: rank + 1,
                doc,
                position,
                value,
                context: String::new(),
            });
        }
    }
    // The tokens needed, read from the tokens table.
    let ctx = spec.context_tokens as i32;
    let mut needed: HashMap<u32, HashSet<i32>> = HashMap::new();
    for c in &out {
        needed
            .entry(c.doc)
            .or_default()
            .extend((c.position - ctx).max(0)..=c.position);
    }
    let wanted: HashMap<&str, u32> = needed
        .keys()
        .map(|&d| (scan.docs[d as usize].as_str(), d))
        .collect();
    let mut text: HashMap<(u32, i32), String> = HashMap::new();
    for f in &table_parts(run_dir, &TOKENS)? {
        let (reader, _) = open_part(f, &["doc_id", "position", "token"], None, KEY_BATCH_ROWS)?;
        for b in batches(reader, f) {
            let b = b?;
            let d = column::<StringArray>(&b, "doc_id", f, "string")?;
            let p = column::<Int32Array>(&b, "position", f, "int32")?;
            let t = column::<StringArray>(&b, "token", f, "string")?;
            for i in 0..b.num_rows() {
                if let Some(&doc) = wanted.get(d.value(i))
                    && needed[&doc].contains(&p.value(i))
                {
                    text.insert((doc, p.value(i)), t.value(i).to_string());
                }
            }
        }
    }
    for c in &mut out {
        for pos in (c.position - ctx).max(0)..=c.position {
            if let Some(t) = text.get(&(c.doc, pos)) {
                c.context.push_str(t);
            }
        }
    }
    Ok(out)
}
