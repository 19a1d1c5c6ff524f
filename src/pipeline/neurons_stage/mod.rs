//! The neurons stage: every recorded MLP neuron's strongest activations over the whole run, with
//! their context, and its summary statistics, from the run's `activations` table, written as the
//! tables `neuron_top_contexts` and `neuron_stats` (docs/neurons.md).
//!
//! One streaming pass: the `layer` column of every part says which layers the table has; then
//! the chosen layers' rows (a Parquet row selection skips the others) go, one record batch at a
//! time, to one [`LayerAccumulator`](crate::analysis::neurons::LayerAccumulator) per layer
//! (top-k and moments, O(neurons · k) memory whatever the number of positions). Equal values rank
//! by the document's dataset index (`generations.index`), then position, so the top-k is the same
//! whatever the order of parts and shards. Last, one pass over the `tokens` table reads the text
//! around the hits. The tables are written into a staging folder and swapped in whole
//! (`store::Staging`), and their row counts recorded in the manifest (`neurons_rows`).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::error::Result;
use super::spec::NeuronsSpec;
use super::stage_input::{StageInputError, resolve_layers};
use crate::analysis::neurons::Hit;
use crate::store::reader::table_parts;
use crate::store::schema::{
    ACTIVATIONS, NEURON_STATS, NEURON_TOP_CONTEXTS, NeuronStats, NeuronStatsRow, NeuronTopContexts,
    NeuronTopContextsRow, TOKENS,
};
use crate::store::{
    Manifest, RunDir, Staging, StoreError, Table, TableOptions, TableWriter, WriterOptions,
};

mod contexts;
mod error;
mod read;
#[cfg(test)]
mod tests;

pub use error::NeuronsError;

use contexts::{Needed, Texts};
use read::{Accumulators, Docs, accumulate, layers};

/// What [`run_neurons`] reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NeuronsEvent {
    /// The layers are known: `rows` activation rows of the chosen layers will be read.
    Scanned { rows: u64, layers: usize },
    /// `n` more rows were read.
    Rows(u64),
    /// Every row is read; the contexts are being read and the tables written.
    Writing,
}

/// What the stage did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeuronsReport {
    /// The chosen layers, ascending, and their neuron counts.
    pub layers: Vec<usize>,
    pub neurons: Vec<usize>,
    /// Positions per layer (the most of any chosen layer).
    pub positions: u64,
    /// Activation rows read (positions x layers).
    pub rows: u64,
    pub top_k: usize,
    /// Reading the activations (with the scan of their layers), the contexts, writing the tables.
    pub read_seconds: f64,
    pub contexts_seconds: f64,
    pub write_seconds: f64,
    /// Rows written per table.
    pub tables: Vec<(&'static str, u64)>,
}

/// The tables the stage writes (and replaces).
pub const NEURONS_TABLES: [&crate::store::TableDef; 2] = [&NEURON_TOP_CONTEXTS, &NEURON_STATS];

/// Rows per row group of `neuron_top_contexts`: sorted by layer and neuron, so a reader that
/// wants one neuron (the viewer) fetches one small row group, found by its statistics.
const TOP_ROW_GROUP_ROWS: usize = 32 * 1024;

/// The pipeline stage: [`run_neurons`] with a progress bar on stderr (rows read) unless `quiet` or
/// stderr is not a terminal, and the tables' row counts recorded in the manifest.
///
/// Negative indices in `spec.layers` count from the table's highest layer + 1 (see
/// [`resolve_layers`]); a caller that knows the model passes block indices.
pub fn run_stage(run_dir: &Path, spec: &NeuronsSpec, quiet: bool) -> Result<NeuronsReport> {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "neurons {bar:30} {pos}/{len} rows  {msg}  [{elapsed_precise}, eta {eta}]",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message("scanning the activations table");
    let result = run_neurons(run_dir, spec, &mut |e| match e {
        NeuronsEvent::Scanned { rows, layers } => {
            bar.set_length(rows);
            bar.set_message(format!("{layers} layers, top {}", spec.top_k));
        }
        NeuronsEvent::Rows(n) => bar.inc(n),
        NeuronsEvent::Writing => bar.set_message("reading the contexts, writing the tables"),
    });
    bar.finish_and_clear();
    let report = result?;
    Manifest::record_neurons_rows(run_dir, &report.tables)?;
    Ok(report)
}

/// Summarizes the activations of the run in `run_dir` and writes the neuron tables into it,
/// replacing earlier ones only once both new ones are complete (on any error the run is left as
/// it was). The manifest is not changed.
pub fn run_neurons(
    run_dir: &Path,
    spec: &NeuronsSpec,
    progress: &mut dyn FnMut(NeuronsEvent),
) -> Result<NeuronsReport> {
    if spec.top_k == 0 {
        return Err(NeuronsError::NoTopK.into());
    }
    let dir = || run_dir.to_path_buf();
    if !run_dir.is_dir() {
        return Err(StageInputError::NoRunDir { dir: dir() }.into());
    }
    let parts = table_parts(run_dir, &ACTIVATIONS)?;
    if parts.is_empty() {
        return Err(StageInputError::NoActivations {
            dir: dir(),
            reads: "the neuron tables summarize",
        }
        .into());
    }
    if table_parts(run_dir, &TOKENS)?.is_empty() {
        return Err(StageInputError::NoTable {
            dir: dir(),
            table: TOKENS.name,
            needed: "for the text of the top contexts",
        }
        .into());
    }
    let docs = Docs::read(run_dir)?;

    let started = Instant::now();
    let scan = layers(&parts)?;
    let chosen = resolve_layers(&spec.layers, &scan.present, run_dir, "neurons.layers")?;
    let is_chosen = |l: &i32| chosen.contains(&(*l as usize));
    let part_rows: Vec<(u64, bool)> = scan
        .rows
        .iter()
        .map(|r| {
            let mine: u64 = r.iter().filter(|(l, _)| is_chosen(l)).map(|(_, n)| n).sum();
            (mine, mine == r.values().sum::<u64>())
        })
        .collect();
    let total: u64 = part_rows.iter().map(|r| r.0).sum();
    progress(NeuronsEvent::Scanned {
        rows: total,
        layers: chosen.len(),
    });
    let mut accs = Accumulators::new(chosen, spec.top_k);
    for (part, &(rows, all)) in parts.iter().zip(&part_rows) {
        if rows > 0 {
            accumulate(part, all, &docs, &mut accs, &mut |n| {
                progress(NeuronsEvent::Rows(n))
            })?;
        }
    }
    let read_seconds = started.elapsed().as_secs_f64();
    progress(NeuronsEvent::Writing);

    // Every chosen layer is present, so each has rows and an accumulator.
    let layers: Vec<(usize, crate::analysis::neurons::LayerAccumulator)> = accs
        .layers
        .iter()
        .copied()
        .zip(accs.acc)
        .map(|(l, a)| (l, a.expect("a present layer has rows")))
        .collect();
    let contexts = Instant::now();
    let mut needed = Needed::new(spec.context_tokens);
    let tops: Vec<Vec<Vec<Hit>>> = layers
        .iter()
        .map(|(_, acc)| (0..acc.neurons()).map(|j| acc.top(j)).collect())
        .collect();
    for hit in tops.iter().flatten().flatten() {
        needed.add(hit.doc, hit.position);
    }
    let texts = Texts::read(run_dir, &docs, needed)?;
    let contexts_seconds = contexts.elapsed().as_secs_f64();

    let write = Instant::now();
    let staging = Staging::create(run_dir)?;
    let run = staging.run_dir();
    let mut tables = Vec::new();
    let mut top_rows = 0u64;
    {
        let wopts = WriterOptions {
            row_group_rows: TOP_ROW_GROUP_ROWS,
            ..WriterOptions::default()
        };
        let mut w =
            TableWriter::<NeuronTopContexts>::create(run, &TableOptions::default(), &wopts)?;
        for ((layer, _), per_neuron) in layers.iter().zip(&tops) {
            for (j, hits) in per_neuron.iter().enumerate() {
                for (rank, hit) in hits.iter().enumerate() {
                    let doc_id = &docs.id[&hit.doc];
                    let c = texts.context(run_dir, hit.doc, doc_id, hit.position)?;
                    w.append(NeuronTopContextsRow {
                        layer: *layer as i32,
                        neuron: j as i32,
                        rank: rank as i32 + 1,
                        value: hit.value,
                        doc_id,
                        position: hit.position as i32,
                        token: &c.token,
                        before: &c.before,
                        after: &c.after,
                    })?;
                    top_rows += 1;
                }
            }
        }
        let s = w.finish()?;
        debug_assert_eq!(s.rows, top_rows);
        tables.push((s.table, s.rows));
    }
    tables.push(write_table::<NeuronStats>(run, |w| {
        for (layer, acc) in &layers {
            for j in 0..acc.neurons() {
                let s = acc.stats(j).expect("a present layer has rows");
                w.append(NeuronStatsRow {
                    layer: *layer as i32,
                    neuron: j as i32,
                    count: s.count as i64,
                    mean: s.mean,
                    std: s.std,
                    min: s.min,
                    max: s.max,
                    fraction_active: s.fraction_active(),
                    mean_active: s.mean_active,
                })?;
            }
        }
        Ok(())
    })?);
    staging.commit(&NEURONS_TABLES)?;
    Ok(NeuronsReport {
        layers: layers.iter().map(|(l, _)| *l).collect(),
        neurons: layers.iter().map(|(_, a)| a.neurons()).collect(),
        positions: layers.iter().map(|(_, a)| a.count()).max().unwrap_or(0),
        rows: total,
        top_k: spec.top_k,
        read_seconds,
        contexts_seconds,
        write_seconds: write.elapsed().as_secs_f64(),
        tables,
    })
}

fn write_table<T: Table>(
    run: &RunDir,
    fill: impl FnOnce(&mut TableWriter<T>) -> Result<(), StoreError>,
) -> Result<(&'static str, u64)> {
    let mut w = TableWriter::<T>::create(run, &TableOptions::default(), &WriterOptions::default())?;
    fill(&mut w)?;
    let s = w.finish()?;
    Ok((s.table, s.rows))
}
