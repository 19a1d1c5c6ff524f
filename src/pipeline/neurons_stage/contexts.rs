//! The text of the top contexts: for every hit, the token at its position and up to
//! `context_tokens` tokens before and after it in its document, read from the run's `tokens`
//! table in one pass that keeps only the positions some hit needs.

use std::collections::HashMap;
use std::path::Path;

use arrow_array::{Int32Array, StringArray};

use super::NeuronsError;
use super::read::Docs;
use crate::pipeline::error::Result;
use crate::store::reader::{batches, column, open_part, table_parts};
use crate::store::schema::TOKENS;

/// The text around one position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Context {
    pub token: String,
    pub before: String,
    pub after: String,
}

/// The positions the contexts need, per document (by dataset index), as merged ranges.
#[derive(Debug, Default)]
pub(super) struct Needed {
    ranges: HashMap<u32, Vec<(i64, i64)>>,
    context: i64,
}

impl Needed {
    pub fn new(context_tokens: usize) -> Self {
        Needed {
            ranges: HashMap::new(),
            context: context_tokens as i64,
        }
    }

    /// Asks for the context of `position` of document `doc`.
    pub fn add(&mut self, doc: u32, position: u32) {
        let p = position as i64;
        self.ranges
            .entry(doc)
            .or_default()
            .push(((p - self.context).max(0), p + self.context));
    }

    /// Sorts and merges each document's ranges.
    fn merge(&mut self) {
        for v in self.ranges.values_mut() {
            v.sort_unstable();
            let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
            for &(a, b) in v.iter() {
                match out.last_mut() {
                    Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                    _ => out.push((a, b)),
                }
            }
            *v = out;
        }
    }

    fn wants(&self, doc: u32, position: i32) -> bool {
        let Some(v) = self.ranges.get(&doc) else {
            return false;
        };
        let p = position as i64;
        let i = v.partition_point(|r| r.1 < p);
        i < v.len() && v[i].0 <= p
    }
}

/// The tokens the contexts need, read from the tokens table.
pub(super) struct Texts {
    text: HashMap<(u32, i32), String>,
    context: i32,
}

impl Texts {
    pub fn read(run_dir: &Path, docs: &Docs, mut needed: Needed) -> Result<Texts> {
        needed.merge();
        let mut text = HashMap::new();
        for f in &table_parts(run_dir, &TOKENS)? {
            let (reader, _) = open_part(f, &["doc_id", "position", "token"], None, 64 * 1024)?;
            let mut last: Option<(String, Option<u32>)> = None;
            for b in batches(reader, f) {
                let b = b?;
                let d = column::<StringArray>(&b, "doc_id", f, "string")?;
                let p = column::<Int32Array>(&b, "position", f, "int32")?;
                let t = column::<StringArray>(&b, "token", f, "string")?;
                for i in 0..b.num_rows() {
                    let id = d.value(i);
                    if last.as_ref().is_none_or(|(s, _)| s != id) {
                        last = Some((id.to_string(), docs.index.get(id).copied()));
                    }
                    let Some(doc) = last.as_ref().and_then(|x| x.1) else {
                        continue;
                    };
                    if needed.wants(doc, p.value(i)) {
                        text.insert((doc, p.value(i)), t.value(i).to_string());
                    }
                }
            }
        }
        Ok(Texts {
            text,
            context: needed.context as i32,
        })
    }

    /// The context of `position` of document `doc` (its id `doc_id` names it in the error when
    /// the tokens table lacks the position itself).
    pub fn context(
        &self,
        run_dir: &Path,
        doc: u32,
        doc_id: &str,
        position: u32,
    ) -> Result<Context> {
        let p = position as i32;
        let Some(token) = self.text.get(&(doc, p)) else {
            return Err(NeuronsError::NoToken {
                dir: run_dir.to_path_buf(),
                doc: doc_id.to_string(),
                position: p,
            }
            .into());
        };
        let span = |r: std::ops::Range<i32>| {
            r.filter_map(|q| self.text.get(&(doc, q)).map(String::as_str))
                .collect::<String>()
        };
        Ok(Context {
            token: token.clone(),
            before: span((p - self.context).max(0)..p),
            after: span(p + 1..p.saturating_add(self.context).saturating_add(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_ranges_merge_and_answer() {
        let mut n = Needed::new(2);
        n.add(7, 10);
        n.add(7, 3);
        n.add(7, 5);
        n.add(1, 0);
        n.merge();
        assert_eq!(n.ranges[&7], [(1, 12)]);
        assert_eq!(n.ranges[&1], [(0, 2)]);
        assert!(n.wants(7, 1) && n.wants(7, 12) && !n.wants(7, 0) && !n.wants(7, 13));
        assert!(n.wants(1, 2) && !n.wants(1, 3) && !n.wants(2, 0));
        let mut n = Needed::new(0);
        n.add(0, 4);
        n.add(0, 9);
        n.merge();
        assert_eq!(n.ranges[&0], [(4, 4), (9, 9)]);
    }
}
