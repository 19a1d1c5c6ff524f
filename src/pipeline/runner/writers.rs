//! One window's open parts, one per table the spec writes: a batch's records appended as each
//! table's rows, and every part closed (renamed into place) when the window ends.

use super::PARTS_PER_WINDOW;
use super::batches::DocMeta;
use crate::model::Model;
use crate::pipeline::error::{Error, Result};
use crate::pipeline::interventions::Named;
use crate::pipeline::process::{BatchOut, Doc};
use crate::pipeline::spec::{FloatDtype, PipelineSpec};
use crate::store::Shard;
use crate::store::schema::{self as tables, Precision, Table, TableOptions};
use crate::store::writer::{RunDir, TableSummary, TableWriter, WriterOptions};

/// Appends a batch's [`ActivationRec`](crate::pipeline::process::ActivationRec)s `$recs` to the
/// writer `$w` (if the spec writes its table) as rows `tables::$Row`: the `activations` and
/// `residuals` tables, whose rows are alike (doc_id, position, layer, values). When the table
/// stores float16 (`$f16`), a finite value beyond its range is an error naming `$key`.
macro_rules! append_values {
    ($w:expr, $recs:expr, $id:expr, $Row:ident, $f16:expr, $key:literal, $table:literal) => {
        if let Some(w) = &mut $w {
            for a in &$recs {
                if $f16 {
                    check_f16(
                        $key,
                        $table,
                        $id(a.doc),
                        a.position as usize,
                        a.layer as usize,
                        &a.values,
                    )?;
                }
                w.append(tables::$Row {
                    doc_id: $id(a.doc),
                    position: a.position as i32,
                    layer: a.layer as i32,
                    values: &a.values,
                })?;
            }
        }
    };
}

/// A finite value that float16 cannot hold (|x| ≥ 65520 rounds to inf) is an error.
fn check_f16(
    key: &'static str,
    table: &'static str,
    doc_id: &str,
    position: usize,
    layer: usize,
    values: &[f32],
) -> Result<()> {
    match values
        .iter()
        .position(|v| v.is_finite() && half::f16::from_f32(*v).is_infinite())
    {
        None => Ok(()),
        Some(index) => Err(Error::F16Range {
            key,
            table,
            doc_id: doc_id.to_string(),
            position,
            layer,
            index,
            value: values[index],
        }),
    }
}

/// One open part per enabled table, for one window.
pub(super) struct Writers {
    tokens: TableWriter<tables::Tokens>,
    generations: TableWriter<tables::Generations>,
    pairs: Option<TableWriter<tables::Pairs>>,
    predictions: Option<TableWriter<tables::Predictions>>,
    lens: Option<TableWriter<tables::Lens>>,
    lens_topk: Option<TableWriter<tables::LensTopk>>,
    watch: Option<TableWriter<tables::Watch>>,
    saliency: Option<TableWriter<tables::Saliency>>,
    completeness: Option<TableWriter<tables::SaliencyCompleteness>>,
    patching: Option<TableWriter<tables::Patching>>,
    interventions: Option<TableWriter<tables::Interventions>>,
    intervention_tokens: Option<TableWriter<tables::InterventionTokens>>,
    intervention_edits: Option<TableWriter<tables::InterventionEdits>>,
    activations: Option<TableWriter<tables::Activations>>,
    residuals: Option<TableWriter<tables::Residuals>>,
    /// Whether `activations` / `residuals` store float16 (values are range-checked).
    activations_f16: bool,
    residuals_f16: bool,
    attention: Option<TableWriter<tables::Attention>>,
    rollout: Option<TableWriter<tables::AttentionRollout>>,
}

/// Opens the parts of one window.
struct Opener<'a> {
    run: &'a RunDir,
    /// The tables the spec writes.
    names: Vec<&'static str>,
    writer: WriterOptions,
    /// The window's first part number.
    seq: u32,
}

impl Opener<'_> {
    fn table<T: Table>(&self, opts: &TableOptions) -> Result<TableWriter<T>> {
        Ok(TableWriter::<T>::create(self.run, opts, &self.writer)?.starting_at(self.seq))
    }

    /// The table's writer if the spec writes the table.
    fn if_written<T: Table>(&self, opts: &TableOptions) -> Result<Option<TableWriter<T>>> {
        self.names
            .contains(&T::def().name)
            .then(|| self.table(opts))
            .transpose()
    }
}

impl Writers {
    /// The writers of window `window` of `shard`, one per table the spec writes. The first
    /// window of shard 0 also writes the run's resolved intervention edits.
    pub(super) fn open(
        run: &RunDir,
        spec: &PipelineSpec,
        shard: Shard,
        window: u64,
        interventions: &[Named],
    ) -> Result<Writers> {
        let seq = u32::try_from(window)
            .ok()
            .and_then(|w| w.checked_mul(PARTS_PER_WINDOW))
            .ok_or(Error::TooManyWindows)?;
        let o = Opener {
            run,
            names: spec.tables(),
            writer: WriterOptions {
                shard: shard.index,
                ..WriterOptions::default()
            },
            seq,
        };
        let t = TableOptions::default();
        let lists = |dtype: Option<FloatDtype>| TableOptions {
            list_float: match dtype {
                Some(FloatDtype::F16) => Precision::F16,
                _ => Precision::F32,
            },
        };
        let act = lists(spec.analyses.activations.as_ref().map(|a| a.dtype));
        let resid = lists(spec.analyses.residuals.as_ref().map(|a| a.dtype));
        let mut intervention_edits = None;
        if shard.index == 0 && window == 0 {
            intervention_edits = o.if_written::<tables::InterventionEdits>(&t)?;
        }
        if let Some(w) = &mut intervention_edits {
            for n in interventions {
                for e in &n.edits {
                    w.append(tables::InterventionEditsRow {
                        intervention: &n.name,
                        kind: e.kind,
                        layer: e.layer as i32,
                        index: e.index.map(|i| i as i32),
                        source: e.source,
                        alpha: e.alpha,
                        values: &e.values,
                        norm: e.values.iter().map(|x| x * x).sum::<f32>().sqrt(),
                    })?;
                }
            }
        }
        Ok(Writers {
            tokens: o.table(&t)?,
            generations: o.table(&t)?,
            pairs: o.if_written(&t)?,
            predictions: o.if_written(&t)?,
            lens: o.if_written(&t)?,
            lens_topk: o.if_written(&t)?,
            watch: o.if_written(&t)?,
            saliency: o.if_written(&t)?,
            completeness: o.if_written(&t)?,
            patching: o.if_written(&t)?,
            interventions: o.if_written(&t)?,
            intervention_tokens: o.if_written(&t)?,
            intervention_edits,
            activations: o.if_written(&act)?,
            residuals: o.if_written(&resid)?,
            activations_f16: act.list_float == Precision::F16,
            residuals_f16: resid.list_float == Precision::F16,
            attention: o.if_written(&t)?,
            rollout: o.if_written(&t)?,
        })
    }

    /// Appends one batch's records.
    pub(super) fn append(
        &mut self,
        docs: &[Doc],
        meta: &[DocMeta],
        out: &BatchOut,
        model: &Model,
        watch: &[String],
        interventions: &[Named],
    ) -> Result<()> {
        let id = |i: usize| docs[i].id.as_str();
        let text = |t: u32| model.tokenizer.token_text(t);
        for t in &out.tokens {
            self.tokens.append(tables::TokensRow {
                doc_id: id(t.doc),
                position: t.position as i32,
                token_id: t.token_id as i32,
                token: &t.token,
                is_generated: t.is_generated,
            })?;
        }
        for g in &out.generations {
            self.generations.append(tables::GenerationsRow {
                doc_id: id(g.doc),
                index: meta[g.doc].index as i64,
                prompt: &docs[g.doc].text,
                output_text: &g.output_text,
                prompt_tokens: g.prompt_tokens as i32,
                generated_tokens: g.generated_tokens as i32,
                stopped_at_eos: g.stopped_at_eos,
                truncated_tokens: meta[g.doc].truncated as i32,
            })?;
        }
        if let Some(w) = &mut self.pairs {
            for d in docs {
                let p = &d.pair;
                w.append(tables::PairsRow {
                    doc_id: &d.id,
                    corrupted_prompt: p.corrupted.as_ref().map(|c| c.0.as_str()),
                    corrupted_tokens: p.corrupted.as_ref().map(|c| c.1.len() as i32),
                    answer: p.answer.as_ref().map(|a| a.0.as_str()),
                    answer_token_id: p.answer.as_ref().map(|a| a.1 as i32),
                    foil: p.foil.as_ref().map(|f| f.0.as_str()),
                    foil_token_id: p.foil.as_ref().map(|f| f.1 as i32),
                })?;
            }
        }
        if let Some(w) = &mut self.predictions {
            for c in &out.predictions {
                w.append(tables::PredictionsRow {
                    doc_id: id(c.doc),
                    position: c.position as i32,
                    rank: c.rank as i32,
                    token_id: c.token_id as i32,
                    token: &text(c.token_id),
                    prob: c.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.lens {
            for r in &out.lens {
                w.append(tables::LensRow {
                    doc_id: id(r.doc),
                    position: r.position as i32,
                    layer: r.layer as i32,
                    token_id: r.token_id as i32,
                    rank: r.rank as i32,
                    prob: r.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.lens_topk {
            for c in &out.lens_topk {
                w.append(tables::LensTopkRow {
                    doc_id: id(c.doc),
                    position: c.position as i32,
                    layer: c.layer.unwrap_or(0) as i32,
                    rank: c.rank as i32,
                    token_id: c.token_id as i32,
                    token: &text(c.token_id),
                    prob: c.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.watch {
            for r in &out.watch {
                w.append(tables::WatchRow {
                    doc_id: id(r.doc),
                    position: r.position as i32,
                    layer: r.layer as i32,
                    token_id: r.token_id as i32,
                    token: &watch[r.watch.unwrap_or(0) as usize],
                    rank: r.rank as i32,
                    prob: r.prob,
                })?;
            }
        }
        if let Some(w) = &mut self.saliency {
            for r in &out.saliency {
                w.append(tables::SaliencyRow {
                    doc_id: id(r.doc),
                    method: r.method.name(),
                    metric: r.metric.name(),
                    target_position: r.target_position as i32,
                    source_position: r.source_position as i32,
                    score: r.score,
                    raw: r.raw,
                    signed: r.signed,
                })?;
            }
        }
        if let Some(w) = &mut self.completeness {
            for c in &out.completeness {
                w.append(tables::SaliencyCompletenessRow {
                    doc_id: id(c.doc),
                    target_position: c.target_position as i32,
                    metric: c.metric.name(),
                    baseline: c.baseline.name(),
                    value: c.value,
                    baseline_value: c.baseline_value,
                    attribution_sum: c.attribution_sum,
                    error: c.error,
                    steps: c.steps as i32,
                })?;
            }
        }
        if let Some(w) = &mut self.patching {
            let p = &out.patching;
            for r in &p.rows {
                let v = p.pairs[r.doc];
                w.append(tables::PatchingRow {
                    doc_id: id(r.doc),
                    method: r.method.name(),
                    component: r.component.name(),
                    direction: r.direction.name(),
                    metric: r.metric.name(),
                    layer: r.layer as i32,
                    head: r.head.map(|h| h as i32),
                    position: r.position.map(|p| p as i32),
                    value: r.value,
                    effect: r.effect,
                    clean_value: v.clean,
                    corrupted_value: v.corrupted,
                })?;
            }
        }
        if let (Some(w), Some(wt)) = (&mut self.interventions, &mut self.intervention_tokens) {
            for r in &out.interventions {
                let name = &interventions[r.intervention].name;
                w.append(tables::InterventionsRow {
                    doc_id: id(r.doc),
                    intervention: name,
                    output_text: &r.output_text,
                    generated_tokens: r.tokens.len() as i32,
                    stopped_at_eos: r.stopped_at_eos,
                    diverges_at: r.diverges_at.map(|d| d as i32),
                })?;
                for &(position, token_id, prob) in &r.tokens {
                    wt.append(tables::InterventionTokensRow {
                        doc_id: id(r.doc),
                        intervention: name,
                        position: position as i32,
                        token_id: token_id as i32,
                        token: &text(token_id),
                        prob,
                    })?;
                }
            }
        }
        append_values!(
            self.activations,
            out.activations,
            id,
            ActivationsRow,
            self.activations_f16,
            "analyses.activations.dtype",
            "activations"
        );
        append_values!(
            self.residuals,
            out.residuals,
            id,
            ResidualsRow,
            self.residuals_f16,
            "analyses.residuals.dtype",
            "residuals"
        );
        if let Some(w) = &mut self.attention {
            for a in &out.attention {
                w.append(tables::AttentionRow {
                    doc_id: id(a.doc),
                    layer: a.layer as i32,
                    head: a.head.unwrap_or(0) as i32,
                    query_position: a.query_position as i32,
                    weights: &a.weights,
                })?;
            }
        }
        if let Some(w) = &mut self.rollout {
            for a in &out.rollout {
                w.append(tables::AttentionRolloutRow {
                    doc_id: id(a.doc),
                    layer: a.layer as i32,
                    query_position: a.query_position as i32,
                    weights: &a.weights,
                })?;
            }
        }
        Ok(())
    }

    /// Closes every part (renaming it into place); returns rows per table.
    pub(super) fn finish(self) -> Result<Vec<(&'static str, u64)>> {
        let mut rows = vec![];
        let mut done = |s: TableSummary| rows.push((s.table, s.rows));
        done(self.tokens.finish()?);
        done(self.generations.finish()?);
        macro_rules! finish_if_open {
            ($($w:expr),+) => {
                $(if let Some(w) = $w {
                    done(w.finish()?);
                })+
            };
        }
        finish_if_open!(
            self.pairs,
            self.predictions,
            self.lens,
            self.lens_topk,
            self.watch,
            self.saliency,
            self.completeness,
            self.patching,
            self.interventions,
            self.intervention_tokens,
            self.intervention_edits,
            self.activations,
            self.residuals,
            self.attention,
            self.rollout
        );
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_beyond_float16_is_an_error_naming_the_key_and_where() {
        // 65504 is float16's largest; 65519 still rounds to it, 65520 to inf.
        let ok = [1.0, -65504.0, 65519.0, f32::NAN, f32::INFINITY];
        check_f16("analyses.residuals.dtype", "residuals", "p1", 0, 8, &ok).unwrap();
        let err = check_f16(
            "analyses.residuals.dtype",
            "residuals",
            "p3",
            0,
            8,
            &[1.0, 2.0, -68398.5],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "analyses.residuals.dtype: f16 cannot hold doc `p3`'s value -68398.5 (position 0, layer \
             8, index 2): float16's largest is 65504; record this model's residuals as f32 \
             (`dtype: f32`)"
        );
    }
}
