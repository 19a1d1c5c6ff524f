//! Activation patching, exact: for a pair of prompts (clean, corrupted) and a
//! metric of the prediction after the prompt (e.g. logit(answer) − logit(foil)), the metric of
//! one run with one activation replaced by the other run's. `denoise` runs the corrupted prompt
//! with a clean activation patched in (how much of the clean behaviour does this activation
//! restore?); `noise` runs the clean prompt with a corrupted activation (how much does losing it
//! cost?). Sites (`model::patch`): a block's input (`resid_pre`) at a position, a head's output
//! at every position (`attn_head`) or at one (`attn_head_pos`), the MLP's output at a position
//! (`mlp_out`).
//!
//! The effect is normalized as (patched − corrupted) / (clean − corrupted): 0 is the corrupted
//! run's value, 1 the clean run's, in both directions. Patches run as rows of batched forward
//! passes of the base prompt, each row with its own edit. A patch at block l leaves blocks
//! before l as they were, so a batch of patches starts at its lowest block, from the base run's
//! residual stream there; batches run in parallel, one per thread.
//!
//! Attribution patching (Nanda 2023) estimates every patch at once, to first order: the
//! difference of the two runs' activations at a site times the metric's gradient there at the
//! base run, (source − base) · d metric / d site, from one forward and one backward pass of the
//! base prompt (`Model::site_gradients`); its rows have the same shape, method `attribution`,
//! value = base value + estimate.
//!
//! Prompts of different lengths are aligned at their last token (the metric is read there):
//! position p of the clean prompt is position p + (corrupted length − clean length) of the
//! corrupted one, and only positions both prompts have are patched (`attn_head` too). Both runs
//! are computed left-padded to the longer prompt, so a column is the same aligned position in
//! every run; padding is masked out and changes no real token's values. Positions in the rows are
//! the clean prompt's.

use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ops::LayerCache;
use crate::model::patch::{LayerEdit, SiteEdit};
use crate::model::reverse::Metric;
use crate::model::{Batch, Capture, Captures, Logits, Mode, Model};

/// What is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// A block's input (the residual stream) at one position.
    ResidPre,
    /// One head's output (before the output projection) at every position.
    AttnHead,
    /// One head's output at one position.
    AttnHeadPos,
    /// The MLP branch's output at one position.
    MlpOut,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::ResidPre => "resid_pre",
            Component::AttnHead => "attn_head",
            Component::AttnHeadPos => "attn_head_pos",
            Component::MlpOut => "mlp_out",
        }
    }
}

/// Exact patching or its first-order estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A forward pass per patch.
    Exact,
    /// (source − base) · gradient at the base run, for every site from one backward pass.
    Attribution,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Attribution => "attribution",
        }
    }
}

/// Which run is patched with which run's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The corrupted run, a clean activation patched in.
    Denoise,
    /// The clean run, a corrupted activation patched in.
    Noise,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Denoise => "denoise",
            Direction::Noise => "noise",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PatchOptions {
    pub methods: Vec<Method>,
    pub components: Vec<Component>,
    pub directions: Vec<Direction>,
    /// Patched rows per forward pass (bounds memory: rows x tokens activations).
    pub batch_rows: usize,
}

/// One pair to patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairInput {
    pub clean: Vec<u32>,
    pub corrupted: Vec<u32>,
    /// Read after the whole prompt (its last position's prediction).
    pub metric: Metric,
}

/// One patch's result; `doc` indexes the pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchRow {
    pub doc: usize,
    pub method: Method,
    pub component: Component,
    pub direction: Direction,
    pub layer: usize,
    pub head: Option<usize>,
    pub position: Option<usize>,
    pub metric: Metric,
    /// The metric of the patched run.
    pub value: f32,
    /// (value − corrupted) / (clean − corrupted); None when clean and corrupted agree.
    pub effect: Option<f32>,
}

/// A pair's unpatched metric values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairValues {
    pub doc: usize,
    pub clean: f32,
    pub corrupted: f32,
}

#[derive(Debug, Default)]
pub struct Patching {
    pub rows: Vec<PatchRow>,
    pub pairs: Vec<PairValues>,
}

/// One site edit: (component, layer, head, column of the padded runs).
type Patch = (Component, usize, Option<usize>, Option<usize>);

/// Every patch of `components` at the aligned columns `cols`, in (component, layer, head,
/// column) order.
fn patches(model: &Model, components: &[Component], cols: std::ops::Range<usize>) -> Vec<Patch> {
    let (n, h) = (model.config.n_layers, model.config.n_heads);
    let mut out = Vec::new();
    for &c in components {
        for l in 0..n {
            match c {
                Component::ResidPre | Component::MlpOut => {
                    out.extend(cols.clone().map(|p| (c, l, None, Some(p))));
                }
                Component::AttnHead => out.extend((0..h).map(|hi| (c, l, Some(hi), None))),
                Component::AttnHeadPos => {
                    for hi in 0..h {
                        out.extend(cols.clone().map(|p| (c, l, Some(hi), Some(p))));
                    }
                }
            }
        }
    }
    out
}

/// The metric after each row's prompt, from logits [B, V].
fn metric_values(logits: &Tensor, metric: Metric) -> Result<Vec<f32>> {
    let rows: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    Ok(rows.iter().map(|r| metric.eval(r)).collect())
}

/// Exact activation patching of every pair (see the module docs).
pub fn activation_patching(
    model: &Model,
    pairs: &[PairInput],
    opts: &PatchOptions,
) -> Result<Patching> {
    if model.config.is_encoder() {
        return Err(Error::Input(
            "activation patching reads the prediction after a prompt: a decoder's".into(),
        ));
    }
    let mut out = Patching::default();
    let rows_max = opts.batch_rows.max(1);
    for (doc, pair) in pairs.iter().enumerate() {
        let (lc, lk) = (pair.clean.len(), pair.corrupted.len());
        if lc == 0 || lk == 0 {
            return Err(Error::Input(format!(
                "pair {doc}: the clean prompt has {lc} tokens and the corrupted {lk}; patching \
                 needs both"
            )));
        }
        // Columns of the runs padded to the longer prompt; the aligned ones are the last
        // min(lc, lk), and clean position = column − (width − lc).
        let width = lc.max(lk);
        let aligned = width - lc.min(lk)..width;
        let clean_pos = |col: usize| col - (width - lc);
        // Both runs, with every site and their keys and values kept: row 0 clean, row 1
        // corrupted.
        let batch = model.batch(&[pair.clean.clone(), pair.corrupted.clone()])?;
        let mut kv: Vec<LayerCache> = Vec::new();
        let both = model.forward_edited(
            &model.embed(&batch.ids)?,
            &batch,
            &Capture {
                residual: true,
                sites: true,
                logits: Logits::Last,
                ..Capture::default()
            },
            Mode::Fast,
            Some(&mut kv),
            &[],
            None,
        )?;
        let values = metric_values(both.logits.as_ref().expect("asked for"), pair.metric)?;
        let (clean, corrupted) = (values[0], values[1]);
        out.pairs.push(PairValues {
            doc,
            clean,
            corrupted,
        });
        let span = clean - corrupted;
        let list = patches(model, &opts.components, aligned.clone());
        let row =
            |method, (component, layer, head, column): Patch, direction, value: f32| PatchRow {
                doc,
                method,
                component,
                direction,
                layer,
                head,
                position: column.map(clean_pos),
                metric: pair.metric,
                value,
                effect: (span.abs() > 1e-6).then(|| (value - corrupted) / span),
            };
        if opts.methods.contains(&Method::Attribution) {
            for &dir in &opts.directions {
                let (base, base_row, base_value) = match dir {
                    Direction::Denoise => (&pair.corrupted, 1, corrupted),
                    Direction::Noise => (&pair.clean, 0, clean),
                };
                let estimates = attribution(
                    model,
                    base,
                    &both,
                    base_row,
                    &list,
                    aligned.clone(),
                    pair.metric,
                )?;
                for (&p, e) in list.iter().zip(estimates) {
                    out.rows
                        .push(row(Method::Attribution, p, dir, base_value + e));
                }
            }
        }
        if !opts.methods.contains(&Method::Exact) {
            continue;
        }
        // Batches by tiles of blocks and columns, so each starts as late as it can in both: at
        // its lowest block, and (for the positional sites) at its first column, the columns
        // before it read from the base run's keys and values.
        let tile = |&(c, l, _, col): &Patch| {
            (
                c == Component::AttnHead,
                l / TILE_LAYERS,
                col.unwrap_or(0) / TILE_COLUMNS,
            )
        };
        let mut order: Vec<usize> = (0..list.len()).collect();
        order.sort_by_key(|&i| (tile(&list[i]), list[i].1, list[i].3));
        let sorted: Vec<Patch> = order.iter().map(|&i| list[i]).collect();
        // Chunks of at most `rows_max` patches, never across tiles.
        let mut chunks: Vec<&[Patch]> = Vec::new();
        for group in sorted.chunk_by(|a, b| tile(a) == tile(b)) {
            chunks.extend(group.chunks(rows_max));
        }
        for &dir in &opts.directions {
            let (base, base_row, src_row) = match dir {
                Direction::Denoise => (&pair.corrupted, 1, 0),
                Direction::Noise => (&pair.clean, 0, 1),
            };
            let pick = |t: &Tensor, r: usize| -> Result<Tensor> { Ok(t.narrow(0, r, 1)?) };
            let src = |t: &Tensor| pick(t, src_row);
            let start = |l: usize| pick(&both.residual[l], base_row);
            let base_kv = |l: usize| -> Result<(Tensor, Tensor)> {
                let (k, v) = kv[l].kv.as_ref().expect("the cache was filled");
                Ok((pick(k, base_row)?, pick(v, base_row)?))
            };
            let values = chunks
                .par_iter()
                .map(|chunk| {
                    let cols = Columns {
                        width,
                        aligned: aligned.clone(),
                    };
                    let base_run = BaseRun {
                        tokens: base,
                        start: &start,
                        kv: &base_kv,
                    };
                    patched_values(model, &base_run, &both, chunk, &cols, &src, pair.metric)
                })
                .collect::<Result<Vec<_>>>()?;
            let mut by_patch = vec![0f32; list.len()];
            for (&i, v) in order.iter().zip(values.into_iter().flatten()) {
                by_patch[i] = v;
            }
            for (&p, value) in list.iter().zip(by_patch) {
                out.rows.push(row(Method::Exact, p, dir, value));
            }
        }
    }
    Ok(out)
}

/// Attribution patching's estimate of every patch of `list` on `base` (row `base_row` of the
/// two runs' captures, padded to a common width; the other row is the source):
/// (source − base) · d metric / d site, over the site's `aligned` columns.
#[allow(clippy::too_many_arguments)]
fn attribution(
    model: &Model,
    base: &[u32],
    both: &Captures,
    base_row: usize,
    list: &[Patch],
    aligned: std::ops::Range<usize>,
    metric: Metric,
) -> Result<Vec<f32>> {
    let (d, hd) = (model.config.hidden_size, model.config.head_dim);
    let hw = model.config.n_heads * hd;
    let ids = Tensor::from_slice(base, (1, base.len()), model.device())?;
    let embeds = model.embed(&ids)?.flatten_all()?.to_vec1::<f32>()?;
    let (_, grads) = model.site_gradients(embeds, metric)?;
    // (source − base) of a captured site, [width (columns) * site width].
    let diff = |t: &Tensor| -> Result<Vec<f32>> {
        let rows: Vec<Vec<f32>> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_from(1)?
            .to_vec2()?;
        let (b, s) = (&rows[base_row], &rows[1 - base_row]);
        Ok(s.iter().zip(b).map(|(s, b)| s - b).collect())
    };
    let n = model.config.n_layers;
    let resid: Vec<Vec<f32>> = (0..n)
        .map(|l| diff(&both.residual[l]))
        .collect::<Result<_>>()?;
    let z: Vec<Vec<f32>> = (0..n).map(|l| diff(&both.z[l])).collect::<Result<_>>()?;
    let mlp: Vec<Vec<f32>> = (0..n)
        .map(|l| diff(&both.mlp_out[l]))
        .collect::<Result<_>>()?;
    // The base run's gradients are of its unpadded prompt: column c is its position c − pad.
    let pad = both.residual[0].dims()[1] - base.len();
    // Σ over columns `cols` of the padded columns `ps` of diff · grad.
    let dot = |a: &[f32], g: &[f32], width: usize, ps: &[usize], cols: std::ops::Range<usize>| {
        ps.iter()
            .map(|&p| {
                let q = p - pad;
                let (a, g) = (
                    &a[p * width..(p + 1) * width],
                    &g[q * width..(q + 1) * width],
                );
                a[cols.clone()]
                    .iter()
                    .zip(&g[cols.clone()])
                    .map(|(x, y)| *x as f64 * *y as f64)
                    .sum::<f64>()
            })
            .sum::<f64>() as f32
    };
    let all: Vec<usize> = aligned.collect();
    Ok(list
        .iter()
        .map(|&(c, l, head, pos)| {
            let head_cols = |h: usize| h * hd..(h + 1) * hd;
            match c {
                Component::ResidPre => dot(
                    &resid[l],
                    &grads.resid_pre[l],
                    d,
                    &[pos.expect("a position")],
                    0..d,
                ),
                Component::MlpOut => dot(
                    &mlp[l],
                    &grads.mlp_out[l],
                    d,
                    &[pos.expect("a position")],
                    0..d,
                ),
                Component::AttnHead => dot(
                    &z[l],
                    &grads.z[l],
                    hw,
                    &all,
                    head_cols(head.expect("a head")),
                ),
                Component::AttnHeadPos => dot(
                    &z[l],
                    &grads.z[l],
                    hw,
                    &[pos.expect("a position")],
                    head_cols(head.expect("a head")),
                ),
            }
        })
        .collect())
}

/// Patches are batched by tiles of this many blocks × columns (see `activation_patching`):
/// measured on SmolLM2 over 14-token IOI pairs, 8 × 4 beat 8 × 8, 4 × 4 and whole layers.
const TILE_LAYERS: usize = 8;
const TILE_COLUMNS: usize = 4;

/// The runs' padded width and the columns both prompts have.
struct Columns {
    width: usize,
    aligned: std::ops::Range<usize>,
}

/// The unpatched run a chunk of patches edits: its tokens, its residual stream at a block's
/// input ([1, width, d]) and a block's keys and values ([1, Hkv, width, hd]).
struct BaseRun<'a> {
    tokens: &'a [u32],
    start: &'a (dyn Fn(usize) -> Result<Tensor> + Sync),
    kv: &'a (dyn Fn(usize) -> Result<(Tensor, Tensor)> + Sync),
}

/// The metric of the base run once per patch of `chunk` (one row each, left-padded to the runs'
/// width), each patch's site taking the source run's values (`src` picks them from the captures
/// of both runs). What no patch of the chunk can change is not run again: blocks before its
/// first (it starts from the base run's residual there), and columns before its first patched
/// column (the blocks attend to the base run's keys and values there).
fn patched_values(
    model: &Model,
    base: &BaseRun,
    both: &Captures,
    chunk: &[Patch],
    columns: &Columns,
    src: &(dyn Fn(&Tensor) -> Result<Tensor> + Sync),
    metric: Metric,
) -> Result<Vec<f32>> {
    let hd = model.config.head_dim;
    // The first column a patch of the chunk touches; the run covers columns p0..width.
    let p0 = chunk
        .iter()
        .map(|&(c, _, _, col)| match c {
            Component::AttnHead => columns.aligned.start,
            _ => col.expect("a column"),
        })
        .min()
        .unwrap_or(0);
    let (r, len, d) = (chunk.len(), columns.width - p0, model.config.hidden_size);
    let hw = model.config.n_heads * hd;
    let n = model.config.n_layers;
    // Per layer and site: the (row, position, columns) to replace.
    type Places = Vec<(usize, usize, std::ops::Range<usize>)>;
    let mut places: Vec<[Places; 3]> = (0..n).map(|_| Default::default()).collect();
    for (row, &(c, l, head, pos)) in chunk.iter().enumerate() {
        let cols = |h: Option<usize>| match h {
            Some(h) => h * hd..(h + 1) * hd,
            None => 0..d,
        };
        let (site, positions): (usize, Vec<usize>) = match c {
            Component::ResidPre => (0, vec![pos.expect("a position")]),
            Component::AttnHead => (1, columns.aligned.clone().collect()),
            Component::AttnHeadPos => (1, vec![pos.expect("a position")]),
            Component::MlpOut => (2, vec![pos.expect("a position")]),
        };
        for p in positions {
            places[l][site].push((row, p - p0, cols(head)));
        }
    }
    let mut edits = Vec::with_capacity(n);
    for (l, [resid, z, mlp]) in places.into_iter().enumerate() {
        let site = |p: Places, width: usize, t: &Tensor| -> Result<Option<SiteEdit>> {
            if p.is_empty() {
                return Ok(None);
            }
            Ok(Some(SiteEdit::rows(
                (r, len, width),
                &p,
                &src(t)?.narrow(1, p0, len)?,
            )?))
        };
        edits.push(LayerEdit {
            resid_pre: site(resid, d, &both.residual[l])?,
            z: site(z, hw, &both.z[l])?,
            mlp_act: None,
            mlp_out: site(mlp, d, &both.mlp_out[l])?,
        });
    }
    let first = chunk.iter().map(|p| p.1).min().unwrap_or(0);
    let full = model.batch_to(&vec![base.tokens.to_vec(); r], columns.width)?;
    // Columns p0.. as the new tokens, the earlier ones as cached keys and values of every block
    // from the first on (the key mask covers both).
    let batch = Batch {
        ids: full.ids.narrow(1, p0, len)?,
        positions: full.positions.narrow(1, p0, len)?,
        key_mask: full.key_mask.clone(),
        lengths: full.lengths.clone(),
    };
    let mut cache: Vec<LayerCache> = vec![LayerCache::default(); model.config.n_layers];
    if p0 > 0 {
        for (l, c) in cache.iter_mut().enumerate().skip(first) {
            let (k, v) = (base.kv)(l)?;
            let rows = |t: Tensor| -> Result<Tensor> {
                let t = t.narrow(2, 0, p0)?;
                let (_, h, _, e) = t.dims4()?;
                Ok(t.broadcast_as((r, h, p0, e))?.contiguous()?)
            };
            c.kv = Some((rows(k)?, rows(v)?));
        }
    }
    let outs = model.forward_edited(
        &model.embed(&batch.ids)?,
        &batch,
        &Capture {
            logits: Logits::Last,
            ..Capture::default()
        },
        Mode::Fast,
        (p0 > 0).then_some(&mut cache),
        &edits,
        Some((first, &(base.start)(first)?.narrow(1, p0, len)?)),
    )?;
    metric_values(outs.logits.as_ref().expect("asked for"), metric)
}
