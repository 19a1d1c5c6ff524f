//! A run's interventions: the spec's `interventions:` resolved against the model into
//! `model::intervene` edits — layers and indices checked, `mean` values measured over the
//! dataset's first prompts, steering vectors read from a file or computed from two prompt sets
//! (`analysis::interventions`) — and each batch regenerated under each of them, with the same
//! seeds as the plain generation so that only the edit differs.

use std::collections::BTreeMap;
use std::path::Path;

use super::dataset::{self, DatasetError};
use super::error::{Error, Result};
use super::spec::{
    AblationValue, DatasetSpec, InterventionSpec, PipelineSpec, Positions, Selection, TokenChoice,
    TooLong,
};
use crate::analysis::interventions::{self as measure, MeanSites, SiteMeans, TokenReduce};
use crate::model::Model;
use crate::model::generate::{GenerateOptions, Generation};
use crate::model::intervene::{Edit, Intervention, Span};

/// One resolved edit, as the `intervention_edits` table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EditRec {
    /// `neuron`, `head` or `steer`.
    pub kind: &'static str,
    pub layer: u32,
    pub index: Option<u32>,
    pub source: &'static str,
    pub alpha: Option<f32>,
    pub values: Vec<f32>,
}

/// A resolved intervention.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub intervention: Intervention,
    pub edits: Vec<EditRec>,
}

/// One document's generation under one intervention.
#[derive(Debug, Clone, PartialEq)]
pub struct InterventionRec {
    pub doc: usize,
    /// Index into the plan's interventions.
    pub intervention: usize,
    pub output_text: String,
    pub stopped_at_eos: bool,
    pub diverges_at: Option<u32>,
    /// (sequence position, token id, probability) of each generated token.
    pub tokens: Vec<(u32, u32, f32)>,
}

/// The prompts of a dataset, tokenized as the run's prompts are (whole, without truncation).
fn read_prompts(model: &Model, ds: &DatasetSpec, key: &str, spec: &Path) -> Result<Vec<Vec<u32>>> {
    let path = &ds.path;
    let mut out = vec![];
    for p in dataset::open(ds)? {
        let p = p?;
        let mut ids = model.tokenizer.encode(&p.text)?;
        let ctx = model.config.max_position_embeddings;
        if ids.len() > ctx && ds.too_long == TooLong::Truncate {
            ids.drain(..ids.len() - ctx);
        }
        if ids.is_empty() || ids.len() > ctx {
            return Err(DatasetError::At {
                path: path.to_path_buf(),
                at: p.location,
                msg: format!(
                    "{key}: a prompt of {} tokens (it must have 1..={}, the model's context)",
                    ids.len(),
                    model.config.max_position_embeddings
                ),
            }
            .into());
        }
        out.push(ids);
    }
    if out.is_empty() {
        return Err(bad(spec, key, format!("{}: no prompts", path.display())));
    }
    Ok(out)
}

fn bad(spec: &Path, key: &str, msg: String) -> Error {
    Error::Intervention {
        spec: spec.to_path_buf(),
        key: key.to_string(),
        msg,
    }
}

/// Resolves every intervention of `spec` against `model`.
pub fn resolve(spec: &PipelineSpec, model: &Model, batch_size: usize) -> Result<Vec<Named>> {
    let c = &model.config;
    let src = &spec.source;
    let layer = |l: i64, key: &str| -> Result<usize> {
        Selection::List(vec![l])
            .resolve(c.n_layers)
            .map(|v| v[0])
            .map_err(|m| bad(src, key, m))
    };
    // `value: mean` sites, measured once per distinct `mean_prompts` for every intervention
    // that asks for them (a site's mean does not depend on which others are measured with it).
    let mut wanted: BTreeMap<usize, (MeanSites, usize)> = BTreeMap::new();
    for (i, s) in spec.interventions.iter().enumerate() {
        for (k, neurons, a) in s.ablations(i) {
            if a.value == AblationValue::Mean {
                let l = layer(a.layer, &format!("{k}.layer"))?;
                let (sites, _) = wanted
                    .entry(s.mean_prompts)
                    .or_insert_with(|| (MeanSites::default(), i));
                if neurons {
                    sites.mlp_act.insert(l);
                } else {
                    sites.z.insert(l);
                }
            }
        }
    }
    let mut measured: BTreeMap<usize, SiteMeans> = BTreeMap::new();
    for (n, (sites, i)) in wanted {
        // The run's dataset as it reads it (format, text field), its first prompts.
        let ds = DatasetSpec {
            limit: Some(n),
            corrupted_field: None,
            answer_field: None,
            foil_field: None,
            ..spec.dataset.clone()
        };
        let prompts = read_prompts(model, &ds, &format!("interventions[{i}].mean_prompts"), src)?;
        measured.insert(n, measure::site_means(model, &prompts, batch_size, &sites)?);
    }
    let mut out = vec![];
    for (i, s) in spec.interventions.iter().enumerate() {
        let means = measured.get(&s.mean_prompts);
        let mut edits = vec![];
        let mut recs = vec![];
        for (k, neurons, a) in s.ablations(i) {
            let l = layer(a.layer, &format!("{k}.layer"))?;
            let width = if neurons { 1 } else { c.head_dim };
            let (source, per_id): (&'static str, Vec<Vec<f32>>) = match a.value {
                AblationValue::Zero => ("zero", vec![vec![0.0; width]; a.ids.len()]),
                AblationValue::Value(v) => ("value", vec![vec![v as f32; width]; a.ids.len()]),
                AblationValue::Mean => {
                    let m = means.expect("means were measured");
                    let row = if neurons { &m.mlp_act[&l] } else { &m.z[&l] };
                    (
                        "mean",
                        a.ids
                            .iter()
                            .map(|&x| row[x * width..(x + 1) * width].to_vec())
                            .collect(),
                    )
                }
            };
            for (&x, v) in a.ids.iter().zip(&per_id) {
                recs.push(EditRec {
                    kind: if neurons { "neuron" } else { "head" },
                    layer: l as u32,
                    index: Some(x as u32),
                    source,
                    alpha: None,
                    values: v.clone(),
                });
            }
            let values = per_id.concat();
            edits.push(if neurons {
                Edit::Neurons {
                    layer: l,
                    ids: a.ids.clone(),
                    values,
                }
            } else {
                Edit::Heads {
                    layer: l,
                    heads: a.ids.clone(),
                    values,
                }
            });
        }
        for (j, st) in s.steer.iter().enumerate() {
            let k = format!("interventions[{i}].steer[{j}]");
            let l = layer(st.layer, &format!("{k}.layer"))?;
            let (source, v) = match (&st.vector, &st.mean_diff) {
                (Some(f), _) => (
                    "vector",
                    read_vector(f).map_err(|m| bad(src, &format!("{k}.vector"), m))?,
                ),
                (None, Some(m)) => {
                    let side = |p: &Path, s: &str| {
                        let ds = DatasetSpec::new(p);
                        read_prompts(model, &ds, &format!("{k}.mean_diff.{s}"), src)
                    };
                    let reduce = match m.token {
                        TokenChoice::Last => TokenReduce::Last,
                        TokenChoice::Mean => TokenReduce::Mean,
                    };
                    (
                        "mean_diff",
                        measure::mean_difference(
                            model,
                            &side(&m.positive, "positive")?,
                            &side(&m.negative, "negative")?,
                            batch_size,
                            l,
                            reduce,
                        )?,
                    )
                }
                (None, None) => unreachable!("validate requires a vector or mean_diff"),
            };
            if v.len() != c.hidden_size {
                return Err(bad(
                    src,
                    &format!("{k}.vector"),
                    format!(
                        "a vector of {} values; the model's residual stream has {}",
                        v.len(),
                        c.hidden_size
                    ),
                ));
            }
            let scaled: Vec<f32> = v.iter().map(|x| x * st.alpha as f32).collect();
            recs.push(EditRec {
                kind: "steer",
                layer: l as u32,
                index: None,
                source,
                alpha: Some(st.alpha as f32),
                values: scaled.clone(),
            });
            edits.push(Edit::Steer {
                layer: l,
                vector: scaled,
            });
        }
        let intervention = Intervention {
            edits,
            span: span(s),
        };
        intervention.check(model)?;
        out.push(Named {
            name: s.name.clone(),
            intervention,
            edits: recs,
        });
    }
    Ok(out)
}

fn span(s: &InterventionSpec) -> Span {
    match s.positions {
        Positions::All => Span::All,
        Positions::Prompt => Span::Prompt,
        Positions::Generated => Span::Generated,
    }
}

/// A vector from a `.npy` (float32 or float64, one dimension or [1, n]) or `.json` (an array
/// of numbers) file.
pub fn read_vector(path: &Path) -> std::result::Result<Vec<f32>, String> {
    let at = |m: String| format!("{}: {m}", path.display());
    let bytes = std::fs::read(path).map_err(|e| at(e.to_string()))?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let v = if ext == "json" {
        serde_json::from_slice::<Vec<f64>>(&bytes)
            .map_err(|e| at(format!("not a JSON array of numbers: {e}")))?
            .into_iter()
            .map(|x| x as f32)
            .collect::<Vec<f32>>()
    } else {
        read_npy(&bytes).map_err(at)?
    };
    if v.is_empty() {
        return Err(at("the vector is empty".into()));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(at(format!("value {i} is not finite ({})", v[i])));
    }
    Ok(v)
}

/// The data of a little-endian float32/float64 `.npy` array of shape (n,) or (1, n).
fn read_npy(b: &[u8]) -> std::result::Result<Vec<f32>, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no NUMPY magic)".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = b
        .get(start..start + hlen)
        .map(String::from_utf8_lossy)
        .ok_or("the .npy header is cut short")?;
    let field = |name: &str| -> Option<String> {
        let at = header.find(&format!("'{name}'"))? + name.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").ok_or("the .npy header has no descr")?;
    let size = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        let d = descr.split(',').next().unwrap_or_default();
        return Err(format!(
            "dtype {d}: a vector must be little-endian float32 or float64"
        ));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape = field("shape").ok_or("the .npy header has no shape")?;
    let dims: Vec<usize> = shape
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape}")))
        .collect::<std::result::Result<_, _>>()?;
    let n = match dims.as_slice() {
        [n] | [1, n] => *n,
        _ => {
            return Err(format!(
                "shape {dims:?}: a vector has one dimension (or shape [1, n])"
            ));
        }
    };
    let data = &b[start + hlen..];
    if data.len() != n * size {
        return Err(format!(
            "{} data bytes for {n} values of {size} bytes",
            data.len()
        ));
    }
    Ok(if size == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    })
}

/// Each document regenerated under each intervention, compared with its plain generation.
pub fn generate_all(
    model: &Model,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    opts: &GenerateOptions,
    named: &[Named],
    plain: &[Generation],
) -> crate::error::Result<Vec<InterventionRec>> {
    let mut out = vec![];
    for (k, n) in named.iter().enumerate() {
        let gens = model.generate_with(prompts, seeds, opts, Some(&n.intervention))?;
        for (doc, (g, p)) in gens.iter().zip(plain).enumerate() {
            let diverges_at = g
                .generated
                .iter()
                .zip(&p.generated)
                .position(|(a, b)| a != b)
                .or((g.generated.len() != p.generated.len())
                    .then(|| g.generated.len().min(p.generated.len())))
                .map(|i| i as u32);
            let start = g.prompt.len() as u32;
            out.push(InterventionRec {
                doc,
                intervention: k,
                output_text: model.tokenizer.decode(&g.generated)?,
                stopped_at_eos: g.stopped_at_eos,
                diverges_at,
                tokens: g
                    .generated
                    .iter()
                    .zip(&g.probs)
                    .enumerate()
                    .map(|(i, (&t, &pr))| (start + i as u32, t, pr))
                    .collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 .npy file: magic, header (padded to 64 bytes with its newline), data.
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn npy_vectors_are_read_in_float32_and_float64() {
        let v = [1.5f32, -2.0, 0.25];
        assert_eq!(read_npy(&npy("<f4", "(3,)", &f32s(&v))).unwrap(), v);
        assert_eq!(read_npy(&npy("<f4", "(1, 3)", &f32s(&v))).unwrap(), v);
        let d: Vec<u8> = v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect();
        assert_eq!(read_npy(&npy("<f8", "(3,)", &d)).unwrap(), v);
    }

    #[test]
    fn bad_npy_files_say_what_is_wrong() {
        let v = f32s(&[1.0, 2.0]);
        assert_eq!(
            read_npy(b"PK\x03\x04 a zip").unwrap_err(),
            "not a .npy file (no NUMPY magic)"
        );
        assert_eq!(
            read_npy(&npy("<i4", "(2,)", &v)).unwrap_err(),
            "dtype '<i4': a vector must be little-endian float32 or float64"
        );
        assert_eq!(
            read_npy(&npy("<f4", "(2, 2)", &v)).unwrap_err(),
            "shape [2, 2]: a vector has one dimension (or shape [1, n])"
        );
        assert_eq!(
            read_npy(&npy("<f4", "(3,)", &v)).unwrap_err(),
            "8 data bytes for 3 values of 4 bytes"
        );
        let mut cut = npy("<f4", "(2,)", &v);
        cut.truncate(20);
        assert_eq!(read_npy(&cut).unwrap_err(), "the .npy header is cut short");
    }

    #[test]
    fn json_vectors_and_their_errors() {
        let dir = std::env::temp_dir().join(format!("tokenlens-vec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v.json");
        std::fs::write(&f, "[1, -0.5, 3e2]").unwrap();
        assert_eq!(read_vector(&f).unwrap(), [1.0, -0.5, 300.0]);
        std::fs::write(&f, "{\"v\": [1]}").unwrap();
        assert!(
            read_vector(&f)
                .unwrap_err()
                .starts_with(&format!("{}: not a JSON array of numbers", f.display()))
        );
        std::fs::write(&f, "[]").unwrap();
        assert_eq!(
            read_vector(&f).unwrap_err(),
            format!("{}: the vector is empty", f.display())
        );
        let n = dir.join("v.npy");
        std::fs::write(&n, npy("<f4", "(2,)", &f32s(&[1.0, f32::NAN]))).unwrap();
        assert_eq!(
            read_vector(&n).unwrap_err(),
            format!("{}: value 1 is not finite (NaN)", n.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
