//! The layer-similarity step of `tokenlens compare`: table `similarity`, one row per metric,
//! representation, and pair of layers (of run A and run B, or of run A with itself). It reads
//! the runs' `residuals` and/or `activations` tables ([`reps`](super::reps)), streams the
//! matched rows in chunks ([`chunks`](super::chunks)) through the accumulators of
//! [`analysis::similarity`](crate::analysis::similarity): the minibatch CKA of every layer pair
//! (memory: a few batch × batch matrices per layer), and the moment metrics (exact linear CKA,
//! CCA, SVCCA, PWCCA: per layer Σx, Σxxᵀ and per pair Σx_a x_bᵀ) over the pairs `--pairs`
//! names, in as many passes over the data as `--memory-budget` needs. Memory never grows with
//! the number of positions.
//!
//! [`within_run`] is the same computation for the pipeline's `analyses.similarity` (a run's
//! layers against each other, written into a directory the caller gives): the one entry point
//! outside `compare` (docs/architecture.md), so a run's own table and `tokenlens compare RUN`'s
//! are the same code and the same values.

use std::ops::Range;
use std::path::Path;

use super::chunks::{Chunk, Granularity, Item, for_each_chunk};
use super::reps::{Reps, RepsError};
use super::{
    CompareError, Context, Level, MatchedDoc, Matching, Progress, Run, Skipped, Step, StepReport,
};
use crate::analysis::similarity::{
    CovarianceAccumulator, Metric, MinibatchCka, MomentOptions, SimilarityError, SimilarityValue,
    plan_passes,
};
use crate::store::schema::{Similarity, SimilarityRow, TableOptions};
use crate::store::writer::{RunDir, TableWriter, WriterOptions};

pub use super::reps::Source;

/// Which layer pairs the moment metrics compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairs {
    /// Each layer of run A with the layer of run B at the same relative depth (the same index
    /// when the runs have as many layers).
    Diagonal,
    /// Every layer of run A with every layer of run B.
    All,
}

/// The step's options (`tokenlens compare --similarity ... --metrics ... --pairs ...`).
#[derive(Debug, Clone)]
pub struct SimilarityOptions {
    /// The representations to compare (each one both runs recorded; the others are skipped).
    pub sources: Vec<Source>,
    /// Metrics, any of cka_minibatch (every layer pair) and the moment metrics cka, cca,
    /// svcca, pwcca (the `pairs`).
    pub metrics: Vec<Metric>,
    pub pairs: Pairs,
    /// Positions (or documents) per minibatch of the minibatch CKA.
    pub minibatch: usize,
    /// SVCCA's principal directions per side.
    pub svcca_dims: usize,
    /// Bytes the moment accumulators may hold; more pairs take more passes.
    pub memory_budget: usize,
    /// Positions read per chunk.
    pub chunk_rows: usize,
}

impl Default for SimilarityOptions {
    fn default() -> Self {
        SimilarityOptions {
            sources: vec![Source::Residuals, Source::Activations],
            metrics: Metric::ALL.to_vec(),
            pairs: Pairs::Diagonal,
            minibatch: MinibatchCka::DEFAULT_BATCH,
            svcca_dims: crate::analysis::similarity::SVCCA_DIMS,
            memory_budget: 2 << 30,
            chunk_rows: 1024,
        }
    }
}

/// The similarity step.
#[derive(Debug, Clone, Default)]
pub struct SimilarityStep {
    pub options: SimilarityOptions,
}

fn skip(what: impl Into<String>, why: impl Into<String>) -> Skipped {
    Skipped {
        what: what.into(),
        why: why.into(),
    }
}

impl Step for SimilarityStep {
    fn name(&self) -> &'static str {
        "similarity"
    }

    fn run(&self, cx: &Context<'_>) -> Result<StepReport, CompareError> {
        self.write(
            &Runs {
                a: cx.a,
                b: cx.b,
                matching: cx.matching,
            },
            cx.out,
            cx.progress,
            false,
        )
    }
}

/// What the step compares: one run or two, and their matching.
struct Runs<'a> {
    a: &'a Run,
    b: Option<&'a Run>,
    matching: &'a Matching,
}

/// Layer similarity within the run at `dir` (whatever its status: the pipeline calls it before
/// its run is done), written as table `similarity` into `out` (always, with no rows when every
/// source is skipped), the run named `name` in columns `run_a` and `run_b`: exactly what
/// `tokenlens compare DIR --out OUT` writes with the same options (the same documents in the
/// same order, the same chunks). Returns what was compared and skipped and why; a progress bar
/// on stderr unless `quiet`.
pub fn within_run(
    dir: &Path,
    name: &str,
    options: &SimilarityOptions,
    out: &RunDir,
    quiet: bool,
) -> Result<StepReport, CompareError> {
    let mut a = Run::open_any_status("A", dir)?;
    a.given = name.into();
    let matching = Matching::single(&a)?;
    let progress = Progress::new(quiet);
    let step = SimilarityStep {
        options: options.clone(),
    };
    let runs = Runs {
        a: &a,
        b: None,
        matching: &matching,
    };
    let report = step.write(&runs, out, &progress, true);
    progress.finish();
    report
}

impl SimilarityStep {
    /// The table over `runs`, into `out`; `always`: also when no source gives a row (an
    /// empty table), else no table then.
    fn write(
        &self,
        cx: &Runs<'_>,
        out: &RunDir,
        progress: &Progress,
        always: bool,
    ) -> Result<StepReport, CompareError> {
        let mut report = StepReport::default();
        let write = |e| CompareError::Write {
            dir: out.root().to_path_buf(),
            source: Box::new(e),
        };
        let create = || {
            TableWriter::<Similarity>::create(
                out,
                &TableOptions::default(),
                &WriterOptions::default(),
            )
            .map_err(write)
        };
        let mut table: Option<TableWriter<Similarity>> = None;
        if always {
            table = Some(create()?);
        }
        for &source in &self.options.sources {
            let def = source.table();
            let has_b = cx.b.is_none_or(|b| b.has_table(def));
            if !cx.a.has_table(def) || !has_b {
                let who = if !cx.a.has_table(def) {
                    "run A"
                } else {
                    "run B"
                };
                report.skipped.push(skip(
                    format!("similarity of {}", def.name),
                    format!(
                        "{who} has no `{}` table (analyses.{} in its pipeline)",
                        def.name, def.name
                    ),
                ));
                continue;
            }
            let reps_err = |run: &str, e: RepsError| CompareError::Similarity {
                what: format!("run {run}'s {}", def.name),
                msg: e.to_string(),
            };
            let a = Reps::open(&cx.a.dir, source).map_err(|e| reps_err("A", e))?;
            let b = match cx.b {
                Some(b) => Some(Reps::open(&b.dir, source).map_err(|e| reps_err("B", e))?),
                None => None,
            };
            let items = items(cx, &a, b.as_ref());
            let rows: usize = items
                .iter()
                .map(|it| match cx.matching.level {
                    Level::Position => it.a.len(),
                    Level::Document => 1,
                })
                .sum();
            if rows < 4 {
                report.skipped.push(skip(
                    format!("similarity of {}", def.name),
                    format!("{rows} matched rows; the metrics need at least 4"),
                ));
                continue;
            }
            let values = self
                .compute(
                    cx.matching.level,
                    progress,
                    &a,
                    b.as_ref(),
                    &items,
                    rows,
                    &mut report,
                )
                .map_err(|e| CompareError::Similarity {
                    what: format!("the similarity of {}", def.name),
                    msg: e,
                })?;
            let w = match &mut table {
                Some(w) => w,
                None => table.insert(create()?),
            };
            let name_a = cx.a.given.to_string_lossy().into_owned();
            let name_b =
                cx.b.map(|b| b.given.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name_a.clone());
            let lb = b.as_ref().unwrap_or(&a);
            for v in &values {
                w.append(SimilarityRow {
                    metric: v.metric.as_str(),
                    source: source.as_str(),
                    run_a: &name_a,
                    layer_a: a.layers[v.layer_a],
                    run_b: &name_b,
                    layer_b: lb.layers[v.layer_b],
                    value: v.value,
                    rows: rows as i64,
                })
                .map_err(write)?;
            }
            report.compared.push(format!(
                "{}: {} over {rows} matched {} ({} layers of run A, {} of run B)",
                def.name,
                metric_list(&values),
                match cx.matching.level {
                    Level::Position => "positions",
                    Level::Document => "documents (each the mean over its prompt positions)",
                },
                a.layers.len(),
                lb.layers.len(),
            ));
        }
        if let Some(w) = table {
            report.tables.push(w.finish().map_err(write)?);
        }
        Ok(report)
    }
}

fn metric_list(values: &[SimilarityValue]) -> String {
    let mut m: Vec<&str> = values.iter().map(|v| v.metric.as_str()).collect();
    m.dedup();
    let mut seen = Vec::new();
    for x in m {
        if !seen.contains(&x) {
            seen.push(x);
        }
    }
    seen.join(", ")
}

/// The rows to compare per matched document: at position level the positions 0..common both
/// tables store; at document level each run's stored prompt positions.
fn items(cx: &Runs<'_>, a: &Reps, b: Option<&Reps>) -> Vec<Item> {
    let clip = |r: Range<usize>, s: Option<Range<usize>>| match s {
        Some(s) => r.start.max(s.start)..r.end.min(s.end).max(r.start.max(s.start)),
        None => 0..0,
    };
    let mut out = Vec::new();
    for d in &cx.matching.docs {
        let MatchedDoc { doc_id, .. } = d;
        match cx.matching.level {
            Level::Position => {
                let mut r = clip(0..d.common as usize, a.positions(doc_id));
                if let Some(b) = b {
                    r = clip(r, b.positions(doc_id));
                }
                if !r.is_empty() {
                    out.push(Item {
                        doc_id: doc_id.clone(),
                        a: r.clone(),
                        b: r,
                    });
                }
            }
            Level::Document => {
                let ra = clip(0..d.a.prompt_len as usize, a.positions(doc_id));
                let rb = match (b, &d.b) {
                    (Some(b), Some(side)) => clip(0..side.prompt_len as usize, b.positions(doc_id)),
                    _ => ra.clone(),
                };
                if !ra.is_empty() && !rb.is_empty() {
                    out.push(Item {
                        doc_id: doc_id.clone(),
                        a: ra,
                        b: rb,
                    });
                }
            }
        }
    }
    out
}

/// Layer pairs of the moment metrics.
fn pairs(pairs: Pairs, na: usize, nb: usize, one_run: bool) -> Vec<(usize, usize)> {
    match pairs {
        Pairs::All => (0..na).flat_map(|i| (0..nb).map(move |j| (i, j))).collect(),
        Pairs::Diagonal if one_run => vec![],
        Pairs::Diagonal => (0..na)
            .map(|i| {
                let j = if na <= 1 {
                    0
                } else {
                    ((i as f64) * (nb - 1) as f64 / (na - 1) as f64).round() as usize
                };
                (i, j)
            })
            .collect(),
    }
}

impl SimilarityStep {
    /// Every value of one representation: the minibatch CKA over all pairs in the first pass,
    /// the moment metrics of the pass's pairs in each pass.
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &self,
        level: Level,
        progress: &Progress,
        a: &Reps,
        b: Option<&Reps>,
        items: &[Item],
        rows: usize,
        report: &mut StepReport,
    ) -> Result<Vec<SimilarityValue>, String> {
        let o = &self.options;
        let gran = match level {
            Level::Position => Granularity::Position,
            Level::Document => Granularity::Document,
        };
        let wa = a.widths.clone();
        let wb = b.map(|b| b.widths.clone()).unwrap_or_else(|| wa.clone());
        let moment_metrics: Vec<Metric> = o
            .metrics
            .iter()
            .copied()
            .filter(|m| *m != Metric::CkaMinibatch)
            .collect();
        let mut cca_metrics = moment_metrics.clone();
        let widest = wa.iter().chain(&wb).copied().max().unwrap_or(0);
        if rows <= widest {
            // CCA's covariances are singular with fewer rows than neurons: every canonical
            // correlation is 1 whatever the data.
            let dropped: Vec<&str> = cca_metrics
                .iter()
                .filter(|m| matches!(m, Metric::Cca | Metric::Svcca | Metric::Pwcca))
                .map(|m| m.as_str())
                .collect();
            if !dropped.is_empty() {
                report.skipped.push(skip(
                    format!("{} of {}", dropped.join(", "), a.source.as_str()),
                    format!(
                        "{rows} matched rows, not more than the {widest} neurons of the widest layer: \
                         CCA's covariances would be singular"
                    ),
                ));
            }
            cca_metrics.retain(|m| *m == Metric::Cka);
        }
        let mut pair_list = pairs(o.pairs, wa.len(), wb.len(), b.is_none());
        // Within one run every moment metric but PWCCA is symmetric: (j, i) has (i, j)'s value,
        // so only i <= j is accumulated (about half the cross products) and the rest mirrored.
        let mirror = b.is_none() && !cca_metrics.contains(&Metric::Pwcca);
        if mirror {
            pair_list.retain(|&(i, j)| i <= j);
        }
        if pair_list.is_empty() && !cca_metrics.is_empty() {
            report.skipped.push(skip(
                format!(
                    "{} of {} within one run",
                    metric_names(&cca_metrics),
                    a.source.as_str()
                ),
                "--pairs diagonal compares each layer with itself (always 1); use --pairs all",
            ));
            cca_metrics.clear();
        }
        let passes = if cca_metrics.is_empty() {
            vec![]
        } else {
            plan_passes(
                &wa,
                &wb,
                &pair_list,
                o.svcca_dims,
                o.chunk_rows,
                o.memory_budget,
            )
            .map_err(|e| e.to_string())?
        };
        let want_minibatch = o.metrics.contains(&Metric::CkaMinibatch);
        let n_passes = passes.len().max(usize::from(want_minibatch));
        let mut out = Vec::new();
        let batch = o.minibatch.min(rows).max(4);
        for pass in 0..n_passes {
            let mut mb = (pass == 0 && want_minibatch)
                .then(|| MinibatchCka::new(&wa, &wb, batch))
                .transpose()
                .map_err(|e| e.to_string())?;
            let mut acc = passes
                .get(pass)
                .map(|p| CovarianceAccumulator::new(&wa, &wb, p))
                .transpose()
                .map_err(|e| e.to_string())?;
            progress.start(
                &format!(
                    "similarity {} pass {}/{} ({})",
                    a.source.as_str(),
                    pass + 1,
                    n_passes,
                    match gran {
                        Granularity::Position => "positions",
                        Granularity::Document => "documents",
                    }
                ),
                rows as u64,
            );
            // Reading (Parquet decoding) and accumulating (gemms on rayon's threads) overlap:
            // this thread reads chunk k + 1 while a worker pushes chunk k.
            // A rendezvous channel: at most the chunk being read and the one being pushed exist.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(0);
            let (read, pushed) = std::thread::scope(|scope| {
                let worker = scope.spawn(|| -> Result<(), SimilarityError> {
                    let mut err = None;
                    for c in rx {
                        if err.is_some() {
                            continue;
                        }
                        let la: Vec<&[f32]> = c.a.iter().map(Vec::as_slice).collect();
                        let lb: Vec<&[f32]> = c.b().iter().map(Vec::as_slice).collect();
                        if let Some(m) = &mut mb {
                            err = m.push(&la, &lb).err();
                        }
                        if err.is_none()
                            && let Some(acc) = &mut acc
                        {
                            err = acc.push(&la, &lb).err();
                        }
                        progress.inc(c.rows as u64);
                    }
                    err.map_or(Ok(()), Err)
                });
                let read = for_each_chunk(a, b, items, gran, o.chunk_rows, |c| {
                    // A send fails only once the worker is gone; its own error is reported.
                    let _ = tx.send(c);
                    Ok(())
                });
                drop(tx);
                (read, worker.join().expect("the similarity worker panicked"))
            });
            read.map_err(|e| e.to_string())?;
            pushed.map_err(|e| e.to_string())?;
            if let Some(m) = mb {
                let r = m.finish().map_err(|e| e.to_string())?;
                if r.positions_dropped > 0 {
                    report.skipped.push(skip(
                        format!(
                            "cka_minibatch of {}: the last {} rows",
                            a.source.as_str(),
                            r.positions_dropped
                        ),
                        format!("an incomplete batch (batches of {batch})"),
                    ));
                }
                out.extend(r.values);
            }
            if let Some(acc) = acc {
                let opts = MomentOptions {
                    metrics: cca_metrics.clone(),
                    svcca_dims: o.svcca_dims,
                    ..MomentOptions::default()
                };
                let (values, failures) = acc.finish_lenient(&opts).map_err(|e| e.to_string())?;
                if let Some(first) = failures.first() {
                    let more = match failures.len() {
                        1 => String::new(),
                        n => format!(" (and {} more)", n - 1),
                    };
                    report.skipped.push(skip(
                        format!(
                            "{} value(s) of {} (written as NaN{})",
                            failures.len(),
                            a.source.as_str(),
                            if mirror {
                                ", also for the mirrored pairs (j, i)"
                            } else {
                                ""
                            }
                        ),
                        format!("{first}{more}"),
                    ));
                }
                out.extend(values);
            }
        }
        if mirror {
            let mirrored: Vec<SimilarityValue> = out
                .iter()
                .filter(|v| v.metric != Metric::CkaMinibatch && v.layer_a < v.layer_b)
                .map(|v| SimilarityValue {
                    layer_a: v.layer_b,
                    layer_b: v.layer_a,
                    ..*v
                })
                .collect();
            out.extend(mirrored);
        }
        out.sort_by(|x, y| {
            (x.metric.as_str(), x.layer_a, x.layer_b).cmp(&(
                y.metric.as_str(),
                y.layer_a,
                y.layer_b,
            ))
        });
        Ok(out)
    }
}

fn metric_names(m: &[Metric]) -> String {
    m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_pairs_match_relative_depth() {
        assert_eq!(
            pairs(Pairs::Diagonal, 3, 3, false),
            [(0, 0), (1, 1), (2, 2)]
        );
        assert_eq!(
            pairs(Pairs::Diagonal, 3, 5, false),
            [(0, 0), (1, 2), (2, 4)]
        );
        assert_eq!(pairs(Pairs::Diagonal, 3, 3, true), []);
        assert_eq!(pairs(Pairs::All, 2, 2, true).len(), 4);
    }
}
