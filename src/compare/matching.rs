//! Which documents and positions of two finished runs can be compared: the runs opened ([`Run`]:
//! its manifest's model, its tables), their documents matched by doc_id ([`Matching`]: each
//! matched document's tokens in both runs, prompt lengths and `common`, the length of the longest
//! common token prefix), and a table's rows read document by document in any order
//! ([`DocRows`]). Every step of `tokenlens compare` starts from a [`Matching`].
//!
//! Positions 0..common of a matched document have the same context (tokens 0..=position) in both
//! runs, so what the two models compute there (next-token predictions, representations) is
//! comparable. At [`Level::Position`] every matched document's prompt tokens must be the same in
//! both runs (else [`CompareError::PromptsDiffer`], naming the document and position); at
//! [`Level::Document`] tokens are not compared at all (different tokenizers), and only
//! document-level outputs are.
//!
//! Memory: the token ids of every document of both runs (4 bytes a token), their prompts and
//! generated texts, and for a [`DocRows`] index a few integers per document and part.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::{Int32Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use serde::Serialize;

use super::CompareError;
use crate::store::manifest::Manifest;
use crate::store::reader::{batches, column, open_part, table_parts};
use crate::store::schema::{GENERATIONS, TOKENS, TableDef};

/// Rows per record batch when reading parts.
const BATCH_ROWS: usize = 64 * 1024;

/// What a comparison matches: positions (the default) or only documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Documents by doc_id, then positions 0..common; the prompts' tokens must be the same.
    Position,
    /// Documents by doc_id only: no token is compared (e.g. models with different tokenizers).
    Document,
}

/// A run's model as its manifest records it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The checkpoint's path (or hub id) as the run loaded it.
    pub path: String,
    /// The checkpoint's own architecture name (`llama`, `gemma3_text`, ...).
    pub model_type: String,
    /// Blocks: the logit lens has residual streams 0..=n_layers.
    pub n_layers: usize,
    /// V, the vocabulary size of the model's output.
    pub vocab_size: usize,
    /// An encoder (a masked LM): its predictions are of the position itself, not the next one.
    pub encoder: bool,
}

/// A finished run opened for comparison.
#[derive(Debug, Clone)]
pub struct Run {
    /// `A` or `B`, as messages and comparison.json name it.
    pub name: &'static str,
    /// The directory as given.
    pub given: PathBuf,
    /// The directory, absolute.
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model: ModelInfo,
}

impl Run {
    /// Opens the run at `dir`: it must exist, have a manifest, and be done.
    pub fn open(name: &'static str, dir: &Path) -> Result<Run, CompareError> {
        let run = Run::open_any_status(name, dir)?;
        if run.manifest.status != "done" {
            return Err(CompareError::Unfinished {
                dir: dir.to_path_buf(),
                status: run.manifest.status.clone(),
            });
        }
        Ok(run)
    }

    /// Opens the run at `dir` whatever its status (a pipeline's own run, before it is done): it
    /// must exist and have a manifest.
    pub(super) fn open_any_status(name: &'static str, dir: &Path) -> Result<Run, CompareError> {
        if !dir.is_dir() {
            return Err(CompareError::NoRun {
                dir: dir.to_path_buf(),
            });
        }
        if !Manifest::path(dir).is_file() {
            return Err(CompareError::NotARun {
                dir: dir.to_path_buf(),
            });
        }
        let manifest = Manifest::read(dir).map_err(|e| CompareError::Read {
            dir: dir.to_path_buf(),
            what: "its manifest".into(),
            source: Box::new(e),
        })?;
        let m = &manifest.model;
        let int = |key: &str| m["config"][key].as_u64().unwrap_or(0) as usize;
        let model = ModelInfo {
            path: m["path"].as_str().unwrap_or_default().to_string(),
            model_type: m["config"]["model_type"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            n_layers: int("n_layers"),
            vocab_size: int("vocab_size"),
            encoder: m["config"]["arch"] == "bert",
        };
        let abs = dir.canonicalize().map_err(|e| CompareError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        Ok(Run {
            name,
            given: dir.to_path_buf(),
            dir: abs,
            manifest,
            model,
        })
    }

    /// Whether the run wrote `table` (its manifest lists it and its folder has parts).
    pub fn has_table(&self, table: &TableDef) -> bool {
        let listed = self.manifest.tables.iter().any(|t| t == table.name)
            || self
                .manifest
                .nmf_rows
                .as_ref()
                .is_some_and(|r| r.contains_key(table.name));
        listed && table_parts(&self.dir, table).is_ok_and(|p| !p.is_empty())
    }

    /// A value of the run's parsed spec by JSON pointer (`/analyses/lens/final_norm`).
    pub fn spec(&self, pointer: &str) -> Option<&serde_json::Value> {
        self.manifest.spec.pointer(pointer).filter(|v| !v.is_null())
    }

    /// The finished parts of `table`, which the run must have ([`CompareError::MissingTable`]).
    fn required_parts(&self, table: &'static TableDef) -> Result<Vec<PathBuf>, CompareError> {
        let parts = table_parts(&self.dir, table).map_err(|e| self.read_error(table, e))?;
        if parts.is_empty() {
            return Err(CompareError::MissingTable {
                dir: self.given.clone(),
                table: table.name,
            });
        }
        Ok(parts)
    }

    fn read_error(&self, table: &TableDef, e: crate::store::StoreError) -> CompareError {
        CompareError::Read {
            dir: self.given.clone(),
            what: format!("table `{}`", table.name),
            source: Box::new(e),
        }
    }

    fn bad(&self, table: &TableDef, doc_id: &str, msg: String) -> CompareError {
        CompareError::BadTable {
            dir: self.given.clone(),
            table: table.name,
            doc_id: doc_id.to_string(),
            msg,
        }
    }
}

/// One document in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct DocSide {
    /// 0-based index in the run's dataset (`generations.index`).
    pub index: i64,
    /// The prompt text.
    pub prompt: String,
    /// Prompt length in tokens.
    pub prompt_len: u32,
    /// The sequence's token ids: the prompt's, then the generated ones.
    pub tokens: Vec<u32>,
    /// The generated text.
    pub output_text: String,
}

/// A document both runs have (or, for one run, a document of it).
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedDoc {
    pub doc_id: String,
    pub a: DocSide,
    /// None when the comparison has one run.
    pub b: Option<DocSide>,
    /// Length of the longest common prefix of the two token sequences (one run: its length):
    /// positions 0..common have the same context in both runs. 0 at [`Level::Document`].
    pub common: u32,
}

/// The documents two runs have in common (matched by doc_id) and how far their tokens agree.
#[derive(Debug, Clone)]
pub struct Matching {
    pub level: Level,
    /// The matched documents in run A's dataset order.
    pub docs: Vec<MatchedDoc>,
    /// doc_ids only run A has, in its dataset order.
    pub only_a: Vec<String>,
    /// doc_ids only run B has, in its dataset order.
    pub only_b: Vec<String>,
}

impl Matching {
    /// Matches two runs' documents by doc_id (reading their `tokens` and `generations` tables).
    /// Zero common documents is an error; so, at [`Level::Position`], is a document whose prompt
    /// tokens differ between the runs (the first such document in run A's order).
    pub fn new(a: &Run, b: &Run, level: Level) -> Result<Matching, CompareError> {
        let docs_a = read_docs(a)?;
        let mut docs_b: HashMap<String, DocSide> = read_docs(b)?.into_iter().collect();
        let (n_a, n_b) = (docs_a.len(), docs_b.len());
        let mut docs = Vec::new();
        let mut only_a = Vec::new();
        for (doc_id, side_a) in docs_a {
            match docs_b.remove(&doc_id) {
                Some(side_b) => {
                    let common = match level {
                        Level::Position => {
                            check_prompts(a, b, &doc_id, &side_a, &side_b)?;
                            common_prefix(&side_a.tokens, &side_b.tokens)
                        }
                        Level::Document => 0,
                    };
                    docs.push(MatchedDoc {
                        doc_id,
                        a: side_a,
                        b: Some(side_b),
                        common,
                    });
                }
                None => only_a.push(doc_id),
            }
        }
        if docs.is_empty() {
            return Err(CompareError::NoCommonDocs {
                a: a.given.clone(),
                b: b.given.clone(),
                a_docs: n_a,
                b_docs: n_b,
            });
        }
        let mut rest: Vec<(String, DocSide)> = docs_b.into_iter().collect();
        rest.sort_by_key(|(_, s)| s.index);
        Ok(Matching {
            level,
            docs,
            only_a,
            only_b: rest.into_iter().map(|(d, _)| d).collect(),
        })
    }

    /// One run's documents, each matched with itself (`b` None, `common` its length): for
    /// steps that compare within one run.
    pub fn single(a: &Run) -> Result<Matching, CompareError> {
        let docs = read_docs(a)?
            .into_iter()
            .map(|(doc_id, side)| MatchedDoc {
                common: side.tokens.len() as u32,
                doc_id,
                a: side,
                b: None,
            })
            .collect();
        Ok(Matching {
            level: Level::Position,
            docs,
            only_a: Vec::new(),
            only_b: Vec::new(),
        })
    }

    /// Positions compared: the sum of `common` over the matched documents.
    pub fn positions(&self) -> u64 {
        self.docs.iter().map(|d| u64::from(d.common)).sum()
    }
}

/// Length of the longest common prefix.
pub fn common_prefix(a: &[u32], b: &[u32]) -> u32 {
    a.iter().zip(b).take_while(|(x, y)| x == y).count() as u32
}

/// At position level, the prompts' tokens must be the same.
fn check_prompts(
    a: &Run,
    b: &Run,
    doc_id: &str,
    da: &DocSide,
    db: &DocSide,
) -> Result<(), CompareError> {
    let (pa, pb) = (
        &da.tokens[..da.prompt_len as usize],
        &db.tokens[..db.prompt_len as usize],
    );
    if pa == pb {
        return Ok(());
    }
    let position = common_prefix(pa, pb) as usize;
    let describe = |run: &Run, prompt: &[u32]| -> Result<String, CompareError> {
        Ok(match prompt.get(position) {
            Some(&id) => format!(
                "{id} {:?}",
                token_text(run, doc_id, position as u32)?.unwrap_or_default()
            ),
            None => format!("no token (its prompt has {} tokens)", prompt.len()),
        })
    };
    Err(CompareError::PromptsDiffer(Box::new(
        super::PromptsDiffer {
            doc_id: doc_id.to_string(),
            position,
            a: a.given.clone(),
            b: b.given.clone(),
            a_token: describe(a, pa)?,
            b_token: describe(b, pb)?,
        },
    )))
}

/// The text of a document's token at `position` (from the `tokens` table), for messages.
fn token_text(run: &Run, doc_id: &str, position: u32) -> Result<Option<String>, CompareError> {
    let rows = DocRows::index(run, &TOKENS)?;
    let path = run.dir.join(TOKENS.name);
    for b in rows.read(&[doc_id], &["position", "token"])?.concat() {
        let pos = column::<Int32Array>(&b, "position", &path, "int32")
            .map_err(|e| run.read_error(&TOKENS, e))?;
        let tok = column::<StringArray>(&b, "token", &path, "string")
            .map_err(|e| run.read_error(&TOKENS, e))?;
        if let Some(i) = pos.values().iter().position(|&p| p as u32 == position) {
            return Ok(Some(tok.value(i).to_string()));
        }
    }
    Ok(None)
}

/// Every document of a run (its `generations` and `tokens` tables), in dataset order.
fn read_docs(run: &Run) -> Result<Vec<(String, DocSide)>, CompareError> {
    let mut docs: HashMap<String, DocSide> = HashMap::new();
    for part in run.required_parts(&GENERATIONS)? {
        let cols = ["doc_id", "index", "prompt", "output_text", "prompt_tokens"];
        let (reader, _) = open_part(&part, &cols, None, BATCH_ROWS)
            .map_err(|e| run.read_error(&GENERATIONS, e))?;
        for b in batches(reader, &part) {
            let b = b.map_err(|e| run.read_error(&GENERATIONS, e))?;
            let err = |e| run.read_error(&GENERATIONS, e);
            let ids = column::<StringArray>(&b, "doc_id", &part, "string").map_err(err)?;
            let index = column::<Int64Array>(&b, "index", &part, "int64").map_err(err)?;
            let prompt = column::<StringArray>(&b, "prompt", &part, "string").map_err(err)?;
            let out = column::<StringArray>(&b, "output_text", &part, "string").map_err(err)?;
            let plen = column::<Int32Array>(&b, "prompt_tokens", &part, "int32").map_err(err)?;
            for i in 0..b.num_rows() {
                let side = DocSide {
                    index: index.value(i),
                    prompt: prompt.value(i).to_string(),
                    prompt_len: plen.value(i).max(0) as u32,
                    tokens: Vec::new(),
                    output_text: out.value(i).to_string(),
                };
                if docs.insert(ids.value(i).to_string(), side).is_some() {
                    return Err(run.bad(&GENERATIONS, ids.value(i), "two rows".into()));
                }
            }
        }
    }
    // Tokens by position; u32::MAX marks a position no row has filled (yet).
    const HOLE: u32 = u32::MAX;
    for part in run.required_parts(&TOKENS)? {
        let (reader, _) = open_part(&part, &["doc_id", "position", "token_id"], None, BATCH_ROWS)
            .map_err(|e| run.read_error(&TOKENS, e))?;
        for b in batches(reader, &part) {
            let b = b.map_err(|e| run.read_error(&TOKENS, e))?;
            let err = |e| run.read_error(&TOKENS, e);
            let ids = column::<StringArray>(&b, "doc_id", &part, "string").map_err(err)?;
            let pos = column::<Int32Array>(&b, "position", &part, "int32").map_err(err)?;
            let tok = column::<Int32Array>(&b, "token_id", &part, "int32").map_err(err)?;
            let mut current: Option<(&str, &mut DocSide)> = None;
            for i in 0..b.num_rows() {
                let doc_id = ids.value(i);
                let side = match current.take() {
                    Some((d, s)) if d == doc_id => s,
                    _ => docs.get_mut(doc_id).ok_or_else(|| {
                        run.bad(
                            &TOKENS,
                            doc_id,
                            "has tokens but no `generations` row".into(),
                        )
                    })?,
                };
                let (p, id) = (pos.value(i), tok.value(i));
                if p < 0 || id < 0 {
                    return Err(run.bad(&TOKENS, doc_id, format!("position {p}, token {id}")));
                }
                let p = p as usize;
                if p >= side.tokens.len() {
                    side.tokens.resize(p + 1, HOLE);
                }
                if side.tokens[p] != HOLE {
                    return Err(run.bad(&TOKENS, doc_id, format!("two rows at position {p}")));
                }
                side.tokens[p] = id as u32;
                current = Some((doc_id, side));
            }
        }
    }
    let mut out: Vec<(String, DocSide)> = docs.into_iter().collect();
    for (doc_id, side) in &out {
        if let Some(p) = side.tokens.iter().position(|&t| t == HOLE) {
            return Err(run.bad(&TOKENS, doc_id, format!("no row at position {p}")));
        }
        if side.tokens.len() < side.prompt_len as usize {
            return Err(run.bad(
                &TOKENS,
                doc_id,
                format!(
                    "{} tokens, but its prompt has {} (generations.prompt_tokens)",
                    side.tokens.len(),
                    side.prompt_len
                ),
            ));
        }
    }
    out.sort_by_key(|(_, s)| s.index);
    Ok(out)
}

/// Where one document's rows are: `len` rows from row `start` of part `part`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    part: u32,
    start: u64,
    len: u64,
}

/// A table of a run indexed by document, so that any documents' rows can be read in any order:
/// one scan of the `doc_id` column finds each document's runs of rows in each part; reading a
/// set of documents then reads each part once, only their rows (a Parquet row selection).
#[derive(Debug)]
pub struct DocRows {
    run: PathBuf,
    table: &'static TableDef,
    parts: Vec<PathBuf>,
    docs: HashMap<String, Vec<Segment>>,
}

impl DocRows {
    /// Indexes `table` of `run`, which must have it.
    pub fn index(run: &Run, table: &'static TableDef) -> Result<DocRows, CompareError> {
        let parts = run.required_parts(table)?;
        let mut docs: HashMap<String, Vec<Segment>> = HashMap::new();
        for (pi, part) in parts.iter().enumerate() {
            let (reader, _) = open_part(part, &["doc_id"], None, BATCH_ROWS)
                .map_err(|e| run.read_error(table, e))?;
            let mut row = 0u64;
            let mut last: Option<String> = None;
            for b in batches(reader, part) {
                let b = b.map_err(|e| run.read_error(table, e))?;
                let ids = column::<StringArray>(&b, "doc_id", part, "string")
                    .map_err(|e| run.read_error(table, e))?;
                for i in 0..b.num_rows() {
                    let id = ids.value(i);
                    if last.as_deref() == Some(id) {
                        if let Some(s) = docs.get_mut(id).and_then(|v| v.last_mut()) {
                            s.len += 1;
                        }
                    } else {
                        docs.entry(id.to_string()).or_default().push(Segment {
                            part: pi as u32,
                            start: row,
                            len: 1,
                        });
                        last = Some(id.to_string());
                    }
                    row += 1;
                }
            }
        }
        Ok(DocRows {
            run: run.given.clone(),
            table,
            parts,
            docs,
        })
    }

    /// The table's name.
    pub fn table(&self) -> &'static TableDef {
        self.table
    }

    /// Rows of a document (0 if it has none).
    pub fn rows(&self, doc_id: &str) -> u64 {
        self.docs
            .get(doc_id)
            .map_or(0, |s| s.iter().map(|s| s.len).sum())
    }

    /// `columns` of the rows of each of `docs` (one entry per document, its rows in file order as
    /// record batches; empty for a document without rows). Each part holding any of them is read
    /// once.
    pub fn read(
        &self,
        docs: &[&str],
        columns: &[&str],
    ) -> Result<Vec<Vec<RecordBatch>>, CompareError> {
        let mut wanted: Vec<(Segment, usize)> = Vec::new();
        for (d, id) in docs.iter().enumerate() {
            for s in self.docs.get(*id).into_iter().flatten() {
                wanted.push((*s, d));
            }
        }
        wanted.sort_by_key(|(s, _)| (s.part, s.start));
        let mut out = vec![Vec::new(); docs.len()];
        for group in wanted.chunk_by(|x, y| x.0.part == y.0.part) {
            let path = &self.parts[group[0].0.part as usize];
            let mut selectors = Vec::new();
            let mut at = 0u64;
            for (s, _) in group {
                if s.start > at {
                    selectors.push(RowSelector::skip((s.start - at) as usize));
                }
                selectors.push(RowSelector::select(s.len as usize));
                at = s.start + s.len;
            }
            let err = |e| CompareError::Read {
                dir: self.run.clone(),
                what: format!("table `{}`", self.table.name),
                source: Box::new(e),
            };
            let (reader, _) = open_part(
                path,
                columns,
                Some(RowSelection::from(selectors)),
                BATCH_ROWS,
            )
            .map_err(err)?;
            // The selected rows arrive in file order: hand each segment its share.
            let mut segs = group.iter();
            let mut need: Option<(u64, usize)> = segs.next().map(|(s, d)| (s.len, *d));
            for b in batches(reader, path) {
                let b = b.map_err(err)?;
                let mut off = 0usize;
                while off < b.num_rows() {
                    let Some((left, d)) = need.as_mut() else {
                        break;
                    };
                    let take = (*left as usize).min(b.num_rows() - off);
                    out[*d].push(b.slice(off, take));
                    off += take;
                    *left -= take as u64;
                    if *left == 0 {
                        need = segs.next().map(|(s, d)| (s.len, *d));
                    }
                }
            }
            if need.is_some() {
                return Err(err(crate::store::StoreError::RunDir {
                    path: path.clone(),
                    msg: "fewer rows than when it was indexed (changed while reading?)".into(),
                }));
            }
        }
        Ok(out)
    }
}
