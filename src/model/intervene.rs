//! Interventions during generation: Ecco's neuron inhibit/induce, head ablation and steering
//! vectors, applied at every step of a generation through `patch`'s hooks. An [`Intervention`]
//! is a set of [`Edit`]s and the [`Span`] of positions they apply to. Its values are already
//! resolved (zero, a number, a mean over a run, a scaled vector): where they came from is the
//! caller's business.
//!
//! Sites, in block l: the MLP's hidden activation as it enters the output projection (neurons),
//! one head's slice of the attention output projection's input (heads; the `z` of patching),
//! and the block's input (steering adds to the residual stream there).

use candle_core::{DType, Tensor};

use super::Model;
use super::patch::{EditOp, LayerEdit, SiteEdit};
use crate::error::{Error, Result};

/// Which positions of a sequence an intervention edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Every position.
    All,
    /// The prompt's positions.
    Prompt,
    /// The generated tokens' positions, as they are fed back (so the first generated token,
    /// read at the prompt's last position, is never affected).
    Generated,
}

impl Span {
    pub fn covers(self, position: usize, prompt_len: usize) -> bool {
        match self {
            Span::All => true,
            Span::Prompt => position < prompt_len,
            Span::Generated => position >= prompt_len,
        }
    }
}

/// One edit.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Neurons `ids` of block `layer`'s MLP activation take `values` (one per id).
    Neurons {
        layer: usize,
        ids: Vec<usize>,
        values: Vec<f32>,
    },
    /// Heads of block `layer` (their slices of the attention output's input) take `values`:
    /// head_dim values per head, in the order of `heads`.
    Heads {
        layer: usize,
        heads: Vec<usize>,
        values: Vec<f32>,
    },
    /// `vector` (already scaled by its alpha) is added to block `layer`'s input.
    Steer { layer: usize, vector: Vec<f32> },
}

impl Edit {
    pub fn layer(&self) -> usize {
        match self {
            Edit::Neurons { layer, .. } | Edit::Heads { layer, .. } | Edit::Steer { layer, .. } => {
                *layer
            }
        }
    }
}

/// Edits applied together over a span of positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Intervention {
    pub edits: Vec<Edit>,
    pub span: Span,
}

/// The sites of one block an intervention touches: a dense source row per site and the columns
/// it sets.
struct BlockSites {
    /// (values, columns set) of the MLP activation, the heads' z and the residual input.
    act: Option<(Vec<f32>, Vec<bool>)>,
    z: Option<(Vec<f32>, Vec<bool>)>,
    steer: Option<Vec<f32>>,
}

impl Intervention {
    /// Checks every edit against the model's dimensions; errors name the edit.
    pub fn check(&self, model: &Model) -> Result<()> {
        let c = &model.config;
        for (k, e) in self.edits.iter().enumerate() {
            let bad = |what: String| Err(Error::Input(format!("intervention edit {k}: {what}")));
            if e.layer() >= c.n_layers {
                return bad(format!(
                    "layer {} is out of range (the model has {} blocks)",
                    e.layer(),
                    c.n_layers
                ));
            }
            match e {
                Edit::Neurons { ids, values, .. } => {
                    if let Some(i) = ids.iter().find(|&&i| i >= c.intermediate_size) {
                        return bad(format!(
                            "neuron {i} is out of range (the MLP has {} neurons)",
                            c.intermediate_size
                        ));
                    }
                    if values.len() != ids.len() {
                        return bad(format!("{} values for {} neurons", values.len(), ids.len()));
                    }
                }
                Edit::Heads { heads, values, .. } => {
                    if let Some(h) = heads.iter().find(|&&h| h >= c.n_heads) {
                        return bad(format!(
                            "head {h} is out of range (the model has {} heads)",
                            c.n_heads
                        ));
                    }
                    if values.len() != heads.len() * c.head_dim {
                        return bad(format!(
                            "{} values for {} heads of {} dimensions",
                            values.len(),
                            heads.len(),
                            c.head_dim
                        ));
                    }
                }
                Edit::Steer { vector, .. } => {
                    if vector.len() != c.hidden_size {
                        return bad(format!(
                            "a steering vector of {} values for a model of width {}",
                            vector.len(),
                            c.hidden_size
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every block's sites, merged (later edits of the same columns win; steering vectors of
    /// one block add up).
    fn sites(&self, model: &Model) -> Vec<BlockSites> {
        let c = &model.config;
        let mut out: Vec<BlockSites> = (0..c.n_layers)
            .map(|_| BlockSites {
                act: None,
                z: None,
                steer: None,
            })
            .collect();
        for e in &self.edits {
            let s = &mut out[e.layer()];
            match e {
                Edit::Neurons { ids, values, .. } => {
                    let w = c.intermediate_size;
                    let (v, on) = s.act.get_or_insert_with(|| (vec![0.0; w], vec![false; w]));
                    for (&i, &x) in ids.iter().zip(values) {
                        v[i] = x;
                        on[i] = true;
                    }
                }
                Edit::Heads { heads, values, .. } => {
                    let (hd, w) = (c.head_dim, c.n_heads * c.head_dim);
                    let (v, on) = s.z.get_or_insert_with(|| (vec![0.0; w], vec![false; w]));
                    for (k, &h) in heads.iter().enumerate() {
                        v[h * hd..(h + 1) * hd].copy_from_slice(&values[k * hd..(k + 1) * hd]);
                        on[h * hd..(h + 1) * hd].fill(true);
                    }
                }
                Edit::Steer { vector, .. } => {
                    let acc = s.steer.get_or_insert_with(|| vec![0.0; vector.len()]);
                    acc.iter_mut().zip(vector).for_each(|(a, x)| *a += x);
                }
            }
        }
        out
    }

    /// The blocks' edits for one forward step: `positions[r][c]` is the sequence position of
    /// row r's column c (None for padding), `prompt_lens[r]` row r's prompt length.
    pub fn layer_edits(
        &self,
        model: &Model,
        positions: &[Vec<Option<usize>>],
        prompt_lens: &[usize],
    ) -> Result<Vec<LayerEdit>> {
        let b = positions.len();
        let t = positions.first().map_or(0, Vec::len);
        let covered: Vec<bool> = positions
            .iter()
            .zip(prompt_lens)
            .flat_map(|(row, &pl)| {
                row.iter()
                    .map(move |p| p.is_some_and(|p| self.span.covers(p, pl)))
            })
            .collect();
        let dev = model.device();
        let site = |values: &[f32], on: &[bool], op: EditOp| -> Result<SiteEdit> {
            let w = values.len();
            let mut mask = vec![0u8; b * t * w];
            for (rc, &cov) in covered.iter().enumerate() {
                if cov {
                    mask[rc * w..(rc + 1) * w]
                        .iter_mut()
                        .zip(on)
                        .for_each(|(m, &o)| *m = o as u8);
                }
            }
            Ok(SiteEdit {
                mask: Tensor::from_vec(mask, (b, t, w), dev)?.to_dtype(DType::U8)?,
                src: Tensor::from_vec(values.to_vec(), (1, 1, w), dev)?,
                op,
            })
        };
        self.sites(model)
            .into_iter()
            .map(|s| {
                Ok(LayerEdit {
                    resid_pre: match &s.steer {
                        Some(v) => Some(site(v, &vec![true; v.len()], EditOp::Add)?),
                        None => None,
                    },
                    z: match &s.z {
                        Some((v, on)) => Some(site(v, on, EditOp::Replace)?),
                        None => None,
                    },
                    mlp_act: match &s.act {
                        Some((v, on)) => Some(site(v, on, EditOp::Replace)?),
                        None => None,
                    },
                    mlp_out: None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::tiny_model;

    #[test]
    fn spans_and_merged_sites() {
        assert!(Span::All.covers(0, 3) && Span::All.covers(5, 3));
        assert!(Span::Prompt.covers(2, 3) && !Span::Prompt.covers(3, 3));
        assert!(!Span::Generated.covers(2, 3) && Span::Generated.covers(3, 3));
        let model = tiny_model("tiny-llama");
        let c = &model.config;
        let (hd, w) = (c.head_dim, c.n_heads * c.head_dim);
        let iv = Intervention {
            edits: vec![
                Edit::Neurons {
                    layer: 1,
                    ids: vec![0, 2],
                    values: vec![5.0, 6.0],
                },
                // The same layer again: later edits of a column win, others add up.
                Edit::Neurons {
                    layer: 1,
                    ids: vec![2, 3],
                    values: vec![7.0, 8.0],
                },
                Edit::Heads {
                    layer: 0,
                    heads: vec![1],
                    values: vec![1.0; hd],
                },
                Edit::Steer {
                    layer: 1,
                    vector: vec![1.0; c.hidden_size],
                },
                Edit::Steer {
                    layer: 1,
                    vector: vec![0.5; c.hidden_size],
                },
            ],
            span: Span::Prompt,
        };
        iv.check(&model).unwrap();
        // Row 0: one padding column then positions 0, 1; row 1: positions 1, 2 of a 2-token
        // prompt (position 2 is generated).
        let cols = vec![
            vec![None, Some(0), Some(1)],
            vec![Some(0), Some(1), Some(2)],
        ];
        let edits = iv.layer_edits(&model, &cols, &[2, 2]).unwrap();
        assert_eq!(edits.len(), c.n_layers);
        let mask = |e: &SiteEdit| e.mask.to_vec3::<u8>().unwrap();
        let src = |e: &SiteEdit| e.src.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let act = edits[1].mlp_act.as_ref().unwrap();
        assert_eq!(act.op, EditOp::Replace);
        assert_eq!(&src(act)[..4], [5.0, 0.0, 7.0, 8.0]);
        let m = mask(act);
        assert_eq!(&m[0][0][..5], [0, 0, 0, 0, 0]); // padding
        assert_eq!(&m[0][1][..5], [1, 0, 1, 1, 0]);
        assert_eq!(&m[1][2][..5], [0, 0, 0, 0, 0]); // a generated position
        let z = edits[0].z.as_ref().unwrap();
        let zm = mask(z);
        assert_eq!(zm[1][0].len(), w);
        assert!(zm[1][0][hd..2 * hd].iter().all(|&x| x == 1));
        assert!(zm[1][0][..hd].iter().all(|&x| x == 0));
        let steer = edits[1].resid_pre.as_ref().unwrap();
        assert_eq!(steer.op, EditOp::Add);
        assert!(src(steer).iter().all(|&x| x == 1.5));
        assert!(edits[0].resid_pre.is_none() && edits[2].is_empty());
        // Applied: replaced where masked, added where steered, untouched elsewhere.
        let x = Tensor::ones((2, 3, c.hidden_size), DType::F32, model.device()).unwrap();
        let y = steer.apply(&x).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!((y[0][0][0], y[0][1][0], y[1][2][0]), (1.0, 2.5, 1.0));
    }

    #[test]
    fn edits_the_model_lacks_are_refused() {
        let model = tiny_model("tiny-llama");
        let c = &model.config;
        let bad = |e: Edit| {
            Intervention {
                edits: vec![e],
                span: Span::All,
            }
            .check(&model)
            .unwrap_err()
            .to_string()
        };
        assert!(
            bad(Edit::Steer {
                layer: c.n_layers,
                vector: vec![]
            })
            .contains(&format!(
                "edit 0: layer {} is out of range (the model has {} blocks)",
                c.n_layers, c.n_layers
            ))
        );
        assert!(
            bad(Edit::Neurons {
                layer: 0,
                ids: vec![c.intermediate_size],
                values: vec![0.0]
            })
            .contains("is out of range (the MLP has")
        );
        assert!(
            bad(Edit::Steer {
                layer: 0,
                vector: vec![0.0; 3]
            })
            .contains(&format!(
                "a steering vector of 3 values for a model of width {}",
                c.hidden_size
            ))
        );
        assert!(
            bad(Edit::Heads {
                layer: 0,
                heads: vec![0],
                values: vec![0.0; 2]
            })
            .contains("2 values for 1 heads of")
        );
    }
}
