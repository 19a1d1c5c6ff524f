//! The run diff (`diff::DiffStep`): two runs' next-token predictions, logit lens and saliency
//! compared document by document and position by position, written as tables `diff` (one row per
//! document and position p < common) and `diff_docs` (one row per document, the diff's summary
//! and the generated texts). At document level only `diff_docs`' document columns are filled.
//!
//! Sources, each used where both runs have it (else its columns are null and comparison.json's
//! `skipped` says why): `predictions` (top-1, KL and JS with the tail treatment of
//! [`super::divergence`]), `lens` (the next token's probability and rank at the last layer, with
//! the final norm the model's own output, and its depth summaries), `saliency` (the total
//! variation between the two runs' scores of a token generated in both, one method both ran,
//! metric `prob`). A row's next token, its lens values and its saliency are all about the token
//! at p + 1; its predictions are the distributions at p, which predict that token.
//!
//! Documents are read in chunks of about [`CHUNK_ROWS`] rows of the source tables, each chunk's
//! rows of each table read from each part once ([`DocRows::read`]); memory is a chunk's rows.

use std::collections::HashMap;

use arrow_array::{Float32Array, Int32Array, RecordBatch, StringArray};

use super::divergence::{Divergence, lens_depths, total_variation};
use super::matching::{DocRows, DocSide, Level, MatchedDoc, Run};
use super::{CompareError, Context, Skipped, Step, StepReport};
use crate::store::schema::{
    Diff, DiffDocs, DiffDocsRow, DiffRow, LENS, PREDICTIONS, SALIENCY, TableDef, TableOptions,
};
use crate::store::writer::{TableWriter, WriterOptions};

/// Rows of the source tables (both runs) read at a time, at least one document's.
pub const CHUNK_ROWS: u64 = 1 << 20;

/// Saliency methods in order of preference when both runs ran several.
const METHODS: [&str; 3] = ["integrated_gradients", "grad_x_input", "gradient"];

/// The run diff: tables `diff` and `diff_docs`. Needs two runs.
#[derive(Debug, Clone, Copy)]
pub struct DiffStep;

impl Step for DiffStep {
    fn name(&self) -> &'static str {
        "diff"
    }

    fn run(&self, cx: &Context<'_>) -> Result<StepReport, CompareError> {
        let Some(b) = cx.b else {
            return Ok(StepReport {
                skipped: vec![skip("diff, diff_docs", "one run: a diff needs two")],
                ..StepReport::default()
            });
        };
        let mut report = StepReport::default();
        let sources = match cx.matching.level {
            Level::Position => Sources::open(cx.a, b, &mut report)?,
            Level::Document => {
                report.skipped.push(skip(
                    "diff, and diff_docs' position columns",
                    "--level document: tokens are not matched",
                ));
                Sources::default()
            }
        };
        let write = |e| CompareError::Write {
            dir: cx.out.root().to_path_buf(),
            source: Box::new(e),
        };
        let (to, wo) = (TableOptions::default(), WriterOptions::default());
        let mut diff = match cx.matching.level {
            Level::Position => Some(TableWriter::<Diff>::create(cx.out, &to, &wo).map_err(write)?),
            Level::Document => None,
        };
        let mut docs_w = TableWriter::<DiffDocs>::create(cx.out, &to, &wo).map_err(write)?;
        let mut div = Divergence::default();
        let docs = &cx.matching.docs;
        let mut start = 0;
        while start < docs.len() {
            let mut end = start + 1;
            let mut rows = sources.rows(&docs[start].doc_id);
            while end < docs.len() && rows + sources.rows(&docs[end].doc_id) <= CHUNK_ROWS {
                rows += sources.rows(&docs[end].doc_id);
                end += 1;
            }
            let chunk = &docs[start..end];
            let data = sources.read(chunk, [cx.a, b])?;
            for (doc, [da, db]) in chunk.iter().zip(data) {
                let summary = match &mut diff {
                    Some(w) => {
                        doc_rows(doc, &da, &db, sources.vocab, &mut div, w).map_err(write)?
                    }
                    None => Summary::default(),
                };
                docs_w
                    .append(doc_row(doc, &summary, cx.matching.level))
                    .map_err(write)?;
            }
            cx.progress.inc(chunk.len() as u64);
            start = end;
        }
        if let Some(w) = diff {
            report.tables.push(w.finish().map_err(write)?);
        }
        report.tables.push(docs_w.finish().map_err(write)?);
        Ok(report)
    }
}

fn skip(what: &str, why: impl Into<String>) -> Skipped {
    Skipped {
        what: what.to_string(),
        why: why.into(),
    }
}

/// The tables read, per run (`[A, B]`), where both have them.
#[derive(Default)]
struct Sources {
    predictions: Option<[DocRows; 2]>,
    lens: Option<[DocRows; 2]>,
    saliency: Option<[DocRows; 2]>,
    /// The saliency method compared.
    method: String,
    /// Whether each run's lens applies the final norm (its last layer is the model's output).
    final_norm: [bool; 2],
    n_layers: [usize; 2],
    /// V of the tail treatment: the larger of the two models' vocabularies.
    vocab: usize,
}

impl Sources {
    /// Indexes the tables both runs have; records what is compared and skipped.
    fn open(a: &Run, b: &Run, report: &mut StepReport) -> Result<Sources, CompareError> {
        let mut s = Sources {
            n_layers: [a.model.n_layers, b.model.n_layers],
            vocab: a.model.vocab_size.max(b.model.vocab_size),
            ..Sources::default()
        };
        let both = |t: &'static TableDef, what: &str, report: &mut StepReport| {
            let missing: Vec<&str> = [a, b]
                .iter()
                .filter(|r| !r.has_table(t))
                .map(|r| r.name)
                .collect();
            if missing.is_empty() {
                return true;
            }
            let why = match missing.as_slice() {
                [one] => format!("run {one} has no `{}` table", t.name),
                _ => format!("neither run has a `{}` table", t.name),
            };
            report.skipped.push(skip(what, why));
            false
        };
        let pair = |t: &'static TableDef| -> Result<[DocRows; 2], CompareError> {
            Ok([DocRows::index(a, t)?, DocRows::index(b, t)?])
        };
        let prediction_cols = "top1_*, agree, kl_ab, kl_ba, js";
        if a.model.encoder != b.model.encoder {
            report.skipped.push(skip(
                prediction_cols,
                "one run is an encoder (its predictions are of the position itself), the other \
                 a decoder (of the next position)",
            ));
        } else if both(&PREDICTIONS, prediction_cols, report) {
            s.predictions = Some(pair(&PREDICTIONS)?);
            let k = |r: &Run| r.spec("/analyses/predictions/top_k").map(|v| v.to_string());
            report.compared.push(format!(
                "top-1 agreement, KL and JS of the next-token distributions from `predictions` \
                 (top-k {} and {}), each side's remaining mass spread evenly over the other V - k \
                 tokens, V = {}{}",
                k(a).unwrap_or_else(|| "?".into()),
                k(b).unwrap_or_else(|| "?".into()),
                s.vocab,
                if a.model.vocab_size != b.model.vocab_size {
                    format!(
                        " (the larger of {} and {})",
                        a.model.vocab_size, b.model.vocab_size
                    )
                } else {
                    String::new()
                }
            ));
        }
        let lens_cols = "prob_*, rank_*, top1_depth_*, log_rank_*";
        let encoder = a.model.encoder || b.model.encoder;
        if encoder {
            report.skipped.push(skip(
                lens_cols,
                "an encoder run: its lens ranks the position's own token",
            ));
        } else if both(&LENS, lens_cols, report) {
            s.lens = Some(pair(&LENS)?);
            for (i, r) in [a, b].iter().enumerate() {
                s.final_norm[i] = r
                    .spec("/analyses/lens/final_norm")
                    .is_none_or(|v| v.as_bool() != Some(false));
                if !s.final_norm[i] {
                    report.skipped.push(skip(
                        &format!("prob_{0}, rank_{0}", r.name.to_lowercase()),
                        format!(
                            "run {}'s lens has no final norm (analyses.lens.final_norm: false): \
                             its last layer is not the model's output",
                            r.name
                        ),
                    ));
                }
            }
            report.compared.push(format!(
                "the next token's probability and rank at the last layer of `lens`, and its lens \
                 depths (top1_depth, log_rank) over {} and {} layers",
                a.model.n_layers, b.model.n_layers
            ));
        }
        let sal_col = "saliency_distance";
        if encoder {
            report.skipped.push(skip(
                sal_col,
                "an encoder run: its saliency explains [MASK] predictions",
            ));
        } else if both(&SALIENCY, sal_col, report) {
            let ran = |r: &Run, key: &str| -> Vec<String> {
                r.spec(&format!("/analyses/saliency/{key}"))
                    .and_then(|v| v.as_array())
                    .map(|v| {
                        v.iter()
                            .filter_map(|m| m.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let generated = |r: &Run| ran(r, "targets").iter().any(|t| t == "generated");
            let (ma, mb) = (ran(a, "methods"), ran(b, "methods"));
            let method = METHODS
                .iter()
                .find(|m| ma.iter().any(|x| x == *m) && mb.iter().any(|x| x == *m));
            match method {
                _ if !generated(a) || !generated(b) => report.skipped.push(skip(
                    sal_col,
                    "a run's saliency does not explain its generated tokens (analyses.saliency.\
                     targets)",
                )),
                None => report.skipped.push(skip(
                    sal_col,
                    format!("no saliency method both runs ran (A: {ma:?}, B: {mb:?})"),
                )),
                Some(m) => {
                    s.saliency = Some(pair(&SALIENCY)?);
                    s.method = m.to_string();
                    report.compared.push(format!(
                        "saliency of tokens generated in both runs: total variation (half the L1 \
                         distance) between the two runs' `{m}` scores, metric prob"
                    ));
                }
            }
        }
        Ok(s)
    }

    /// Rows of a document in the tables read (both runs).
    fn rows(&self, doc_id: &str) -> u64 {
        [&self.predictions, &self.lens, &self.saliency]
            .into_iter()
            .flatten()
            .flat_map(|p| p.iter().map(|r| r.rows(doc_id)))
            .sum()
    }

    /// The chunk's documents' data, per document `[A, B]`.
    fn read(
        &self,
        chunk: &[MatchedDoc],
        runs: [&Run; 2],
    ) -> Result<Vec<[SideData; 2]>, CompareError> {
        let ids: Vec<&str> = chunk.iter().map(|d| d.doc_id.as_str()).collect();
        let mut out: Vec<[SideData; 2]> = chunk.iter().map(|_| Default::default()).collect();
        for side in 0..2 {
            let run = runs[side];
            let cols = |t: &'static TableDef, b: &RecordBatch| Cols {
                batch: b.clone(),
                run,
                table: t,
            };
            if let Some(p) = &self.predictions {
                let read =
                    p[side].read(&ids, &["position", "rank", "token_id", "token", "prob"])?;
                for ((doc, bs), o) in chunk.iter().zip(read).zip(&mut out) {
                    let d = &mut o[side];
                    d.top = vec![Vec::new(); doc.common as usize];
                    d.top1_text = vec![None; doc.common as usize];
                    for b in &bs {
                        let c = cols(&PREDICTIONS, b);
                        let (pos, rank, id) =
                            (c.i32("position")?, c.i32("rank")?, c.i32("token_id")?);
                        let (tok, prob) = (c.str("token")?, c.f32("prob")?);
                        for i in 0..b.num_rows() {
                            let p = pos.value(i) as usize;
                            if p < d.top.len() {
                                d.top[p].push((
                                    rank.value(i) as u32,
                                    id.value(i) as u32,
                                    prob.value(i),
                                ));
                                if rank.value(i) == 1 {
                                    d.top1_text[p] = Some(tok.value(i).to_string());
                                }
                            }
                        }
                    }
                    d.top
                        .iter_mut()
                        .for_each(|t| t.sort_unstable_by_key(|x| x.0));
                }
            }
            if let Some(l) = &self.lens {
                let n = self.n_layers[side];
                let read =
                    l[side].read(&ids, &["position", "layer", "token_id", "rank", "prob"])?;
                for ((doc, bs), o) in chunk.iter().zip(read).zip(&mut out) {
                    let d = &mut o[side];
                    let toks = side_of(doc, side).tokens.as_slice();
                    let with_next = doc.common.saturating_sub(1) as usize;
                    d.ranks = vec![vec![0; n + 1]; with_next];
                    d.last = vec![None; with_next];
                    for b in &bs {
                        let c = cols(&LENS, b);
                        let (pos, layer, id) =
                            (c.i32("position")?, c.i32("layer")?, c.i32("token_id")?);
                        let (rank, prob) = (c.i32("rank")?, c.f32("prob")?);
                        for i in 0..b.num_rows() {
                            let (p, l) = (pos.value(i) as usize, layer.value(i) as usize);
                            if p >= with_next {
                                continue;
                            }
                            if l > n || id.value(i) as u32 != toks[p + 1] {
                                return Err(c.bad(&doc.doc_id, format!(
                                    "position {p} layer {l} ranks token {}, not the next token {} \
                                     of a {n}-layer model",
                                    id.value(i),
                                    toks[p + 1]
                                )));
                            }
                            d.ranks[p][l] = rank.value(i).max(1) as u32;
                            if l == n {
                                d.last[p] = Some((prob.value(i), rank.value(i)));
                            }
                        }
                    }
                }
            }
            if let Some(s) = &self.saliency {
                let cols_s = [
                    "method",
                    "metric",
                    "target_position",
                    "source_position",
                    "score",
                ];
                let read = s[side].read(&ids, &cols_s)?;
                for (bs, o) in read.into_iter().zip(&mut out) {
                    let d = &mut o[side];
                    for b in &bs {
                        let c = cols(&SALIENCY, b);
                        let (method, metric) = (c.str("method")?, c.str("metric")?);
                        let (t, src, score) = (
                            c.i32("target_position")?,
                            c.i32("source_position")?,
                            c.f32("score")?,
                        );
                        for i in 0..b.num_rows() {
                            if method.value(i) == self.method && metric.value(i) == "prob" {
                                d.saliency
                                    .entry(t.value(i) as u32)
                                    .or_default()
                                    .push((src.value(i) as u32, score.value(i)));
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn side_of(doc: &MatchedDoc, side: usize) -> &DocSide {
    match (side, &doc.b) {
        (1, Some(b)) => b,
        _ => &doc.a,
    }
}

/// One document's rows of the source tables of one run, by position.
#[derive(Default)]
struct SideData {
    /// Per position 0..common: the top-k as (rank, token id, probability), by rank.
    top: Vec<Vec<(u32, u32, f32)>>,
    top1_text: Vec<Option<String>>,
    /// Per position 0..common - 1: the next token's lens rank at each layer (0: no row).
    ranks: Vec<Vec<u32>>,
    /// Its probability and rank at the last layer.
    last: Vec<Option<(f32, i32)>>,
    /// Per target position: (source position, score).
    saliency: HashMap<u32, Vec<(u32, f32)>>,
}

/// Typed columns of a batch read from a run's table; errors name the run and table.
struct Cols<'a> {
    batch: RecordBatch,
    run: &'a Run,
    table: &'static TableDef,
}

impl Cols<'_> {
    fn get<T: 'static + Clone>(&self, name: &str, expected: &str) -> Result<T, CompareError> {
        let path = self.run.dir.join(self.table.name);
        crate::store::reader::column::<T>(&self.batch, name, &path, expected)
            .cloned()
            .map_err(|e| CompareError::Read {
                dir: self.run.given.clone(),
                what: format!("table `{}`", self.table.name),
                source: Box::new(e),
            })
    }
    fn i32(&self, name: &str) -> Result<Int32Array, CompareError> {
        self.get(name, "int32")
    }
    fn f32(&self, name: &str) -> Result<Float32Array, CompareError> {
        self.get(name, "float32")
    }
    fn str(&self, name: &str) -> Result<StringArray, CompareError> {
        self.get(name, "string")
    }
    fn bad(&self, doc_id: &str, msg: String) -> CompareError {
        CompareError::BadTable {
            dir: self.run.given.clone(),
            table: self.table.name,
            doc_id: doc_id.to_string(),
            msg,
        }
    }
}

/// A document's `diff` rows summed up.
#[derive(Debug, Default)]
struct Summary {
    n: u32,
    agree: u32,
    kl_sum: f64,
    kl_max: Option<(f64, u32)>,
    js_sum: f64,
    js_max: f64,
    sal_sum: f64,
    sal_n: u32,
}

/// Writes a document's `diff` rows (positions 0..common); returns their summary.
fn doc_rows(
    doc: &MatchedDoc,
    a: &SideData,
    b: &SideData,
    vocab: usize,
    div: &mut Divergence,
    w: &mut TableWriter<Diff>,
) -> Result<Summary, crate::store::StoreError> {
    let mut s = Summary::default();
    let (sa, sb) = (&doc.a, doc.b.as_ref().unwrap_or(&doc.a));
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    for p in 0..doc.common as usize {
        fn top(d: &SideData, p: usize) -> Option<&[(u32, u32, f32)]> {
            d.top.get(p).map(Vec::as_slice).filter(|t| !t.is_empty())
        }
        let top1 = |d: &SideData| top(d, p).and_then(|t| (t[0].0 == 1).then_some(t[0].1 as i32));
        let (top1_a, top1_b) = (top1(a), top1(b));
        let agree = top1_a.zip(top1_b).map(|(x, y)| x == y);
        let d = match (top(a, p), top(b, p)) {
            (Some(ta), Some(tb)) => {
                pa.clear();
                pa.extend(ta.iter().map(|t| (t.1, t.2)));
                pb.clear();
                pb.extend(tb.iter().map(|t| (t.1, t.2)));
                Some(div.between(&pa, &pb, vocab))
            }
            _ => None,
        };
        if let Some(d) = d {
            s.n += 1;
            s.agree += u32::from(agree == Some(true));
            s.kl_sum += d.kl_pq;
            if s.kl_max.is_none_or(|(m, _)| d.kl_pq > m) {
                s.kl_max = Some((d.kl_pq, p as u32));
            }
            s.js_sum += d.js;
            s.js_max = s.js_max.max(d.js);
        }
        let next = (p + 1 < doc.common as usize).then(|| sa.tokens[p + 1]);
        let last = |d: &SideData| d.last.get(p).copied().flatten();
        let depths = |d: &SideData| match d.ranks.get(p) {
            Some(r) if !r.contains(&0) => lens_depths(r),
            _ => (None, None),
        };
        let ((depth_a, area_a), (depth_b, area_b)) = (depths(a), depths(b));
        // The token at p + 1, explained in both runs where both generated it.
        let t = p as u32 + 1;
        let generated = next.is_some() && t >= sa.prompt_len && t >= sb.prompt_len;
        let sal = match (a.saliency.get(&t), b.saliency.get(&t)) {
            (Some(x), Some(y)) if generated => Some(total_variation(x, y)),
            _ => None,
        };
        if let Some(x) = sal {
            s.sal_sum += x;
            s.sal_n += 1;
        }
        let f = |x: Option<f64>| x.map(|v| v as f32);
        w.append(DiffRow {
            doc_id: &doc.doc_id,
            position: p as i32,
            top1_a,
            top1_b,
            top1_token_a: a.top1_text.get(p).and_then(|t| t.as_deref()),
            top1_token_b: b.top1_text.get(p).and_then(|t| t.as_deref()),
            agree,
            kl_ab: f(d.map(|d| d.kl_pq)),
            kl_ba: f(d.map(|d| d.kl_qp)),
            js: f(d.map(|d| d.js)),
            next_token_id: next.map(|t| t as i32),
            prob_a: last(a).map(|l| l.0),
            prob_b: last(b).map(|l| l.0),
            rank_a: last(a).map(|l| l.1),
            rank_b: last(b).map(|l| l.1),
            top1_depth_a: f(depth_a),
            top1_depth_b: f(depth_b),
            log_rank_a: f(area_a),
            log_rank_b: f(area_b),
            saliency_distance: f(sal),
        })?;
    }
    Ok(s)
}

/// Index in characters of the first character where two texts differ (the shorter one's length
/// when it is a prefix of the other); None when they are the same.
pub fn first_diff_char(a: &str, b: &str) -> Option<usize> {
    if a == b {
        return None;
    }
    let same = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    Some(same)
}

/// A document's `diff_docs` row.
fn doc_row<'a>(doc: &'a MatchedDoc, s: &Summary, level: Level) -> DiffDocsRow<'a> {
    let (a, b) = (&doc.a, doc.b.as_ref().unwrap_or(&doc.a));
    let position = level == Level::Position;
    let len = |d: &DocSide| d.tokens.len() as i32;
    let mean = |sum: f64, n: u32| (n > 0).then(|| (sum / f64::from(n)) as f32);
    let differ = a.tokens.len() != b.tokens.len() || doc.common as usize != a.tokens.len();
    DiffDocsRow {
        doc_id: &doc.doc_id,
        index_a: a.index,
        index_b: b.index,
        prompt_tokens_a: a.prompt_len as i32,
        prompt_tokens_b: b.prompt_len as i32,
        tokens_a: len(a),
        tokens_b: len(b),
        same_prompt: a.prompt == b.prompt,
        same_output: a.output_text == b.output_text,
        first_diff_char: first_diff_char(&a.output_text, &b.output_text).map(|c| c as i32),
        common: position.then_some(doc.common as i32),
        diverges_at: (position && differ).then_some(doc.common as i32),
        n_positions: position.then_some(s.n as i32),
        top1_agreement: mean(f64::from(s.agree), s.n),
        mean_kl: mean(s.kl_sum, s.n),
        max_kl: s.kl_max.map(|m| m.0 as f32),
        max_kl_position: s.kl_max.map(|m| m.1 as i32),
        mean_js: mean(s.js_sum, s.n),
        max_js: (s.n > 0).then_some(s.js_max as f32),
        mean_saliency_distance: mean(s.sal_sum, s.sal_n),
        output_text_a: &a.output_text,
        output_text_b: &b.output_text,
    }
}
