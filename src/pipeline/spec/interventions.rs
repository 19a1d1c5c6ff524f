//! The `interventions:` list: named edits applied while generating (docs/interventions.md).
//! Each intervention regenerates every prompt with its edits (neuron and head ablations,
//! steering vectors) over a span of positions; the rows of `interventions` and
//! `intervention_tokens` say which one produced them.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::validate::{Problems, no_duplicates};
use super::{ModelDims, Positions, Selection};

/// One named intervention: every edit listed applies together.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InterventionSpec {
    /// Names the intervention in the tables (letters, digits, `_`, `-`, `.`). Required.
    pub name: String,
    /// Neuron ablations: a mapping or a list of them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub neurons: Vec<AblationSpec>,
    /// Head ablations: a mapping or a list of them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub heads: Vec<AblationSpec>,
    /// Steering vectors added to the residual stream: a mapping or a list of them.
    #[serde(default, deserialize_with = "one_or_many")]
    pub steer: Vec<SteerSpec>,
    /// Where the edits apply: `all` (default), `prompt`, or `generated` (the generated tokens as
    /// they are fed back; the first generated token is then never affected).
    #[serde(default = "all_positions")]
    pub positions: Positions,
    /// `value: mean` ablations take the mean over the tokens of the dataset's first
    /// `mean_prompts` prompts (every shard's, so shards agree). Default: 256.
    #[serde(default = "default_mean_prompts")]
    pub mean_prompts: usize,
}

fn all_positions() -> Positions {
    Positions::All
}

fn default_mean_prompts() -> usize {
    256
}

/// Neurons of one block's MLP, or heads of one block's attention, set to a value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AblationSpec {
    /// The block; negative counts from the end. Required.
    pub layer: i64,
    /// Neuron indices (of the MLP's hidden activation) or head indices. Required.
    pub ids: Vec<usize>,
    /// `zero` (default), `mean` (see `mean_prompts`), or a number (Ecco's inhibit/induce: a
    /// neuron's activation set to it).
    #[serde(default)]
    pub value: AblationValue,
}

/// What an ablated activation becomes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum AblationValue {
    #[default]
    Zero,
    Mean,
    Value(f64),
}

impl AblationValue {
    pub fn name(self) -> String {
        match self {
            AblationValue::Zero => "zero".into(),
            AblationValue::Mean => "mean".into(),
            AblationValue::Value(v) => format!("{v}"),
        }
    }
}

impl Serialize for AblationValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AblationValue::Zero => s.serialize_str("zero"),
            AblationValue::Mean => s.serialize_str("mean"),
            AblationValue::Value(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for AblationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AblationValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`zero`, `mean` or a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AblationValue, E> {
                match s {
                    "zero" => Ok(AblationValue::Zero),
                    "mean" => Ok(AblationValue::Mean),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AblationValue, E> {
                Ok(AblationValue::Value(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AblationValue, E> {
                Ok(AblationValue::Value(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AblationValue, E> {
                Ok(AblationValue::Value(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// alpha × a vector added to a block's input (the residual stream).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SteerSpec {
    /// The block whose input is steered; negative counts from the end. Required.
    pub layer: i64,
    /// The vector's scale. Default: 1.
    #[serde(default = "one")]
    pub alpha: f64,
    /// A file holding the vector (width = the model's hidden size): `.npy` (float32 or float64,
    /// 1-D) or `.json` (an array of numbers). Give this or `mean_diff`.
    #[serde(default)]
    pub vector: Option<PathBuf>,
    /// The vector computed by the pipeline from two prompt sets. Give this or `vector`.
    #[serde(default)]
    pub mean_diff: Option<MeanDiffSpec>,
}

fn one() -> f64 {
    1.0
}

/// mean(residual stream of `positive`) − mean(residual stream of `negative`) at the steered
/// block's input.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeanDiffSpec {
    /// Prompts, one per line (`.txt`) or a `text` field per line (`.jsonl`). Required.
    pub positive: PathBuf,
    /// Same for the other side. Required.
    pub negative: PathBuf,
    /// Each prompt read at its `last` token (default) or the `mean` over its tokens.
    #[serde(default)]
    pub token: TokenChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenChoice {
    #[default]
    Last,
    Mean,
}

impl InterventionSpec {
    /// Every edit with its YAML key (`interventions[i].neurons[j]`).
    pub fn ablations(&self, i: usize) -> Vec<(String, bool, &AblationSpec)> {
        let n = self
            .neurons
            .iter()
            .enumerate()
            .map(|(j, a)| (format!("interventions[{i}].neurons[{j}]"), true, a));
        let h = self
            .heads
            .iter()
            .enumerate()
            .map(|(j, a)| (format!("interventions[{i}].heads[{j}]"), false, a));
        n.chain(h).collect()
    }
}

/// A mapping or a list of mappings -> a list.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping or a list of mappings")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| vec![t])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::new();
            while let Some(t) = seq.next_element()? {
                v.push(t);
            }
            Ok(v)
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// Interventions' values, top: `mean_prompts`.
pub const MEAN_PROMPTS: (usize, usize) = (1, 1_000_000);

/// Resolves the vector and prompt-set paths with `join` (against the spec's directory).
pub(super) fn resolve_paths(specs: &mut [InterventionSpec], join: impl Fn(&Path) -> PathBuf) {
    for s in specs.iter_mut().flat_map(|i| i.steer.iter_mut()) {
        s.vector = s.vector.as_deref().map(&join);
        if let Some(m) = &mut s.mean_diff {
            m.positive = join(&m.positive);
            m.negative = join(&m.negative);
        }
    }
}

fn extension(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Checks what can be checked without the model or the files.
pub(super) fn check(specs: &[InterventionSpec], max_new_tokens: usize, p: &mut Problems) {
    if !specs.is_empty() {
        p.check(max_new_tokens >= 1, "interventions", || {
            "edit generation: set generation.max_new_tokens >= 1".into()
        });
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in specs.iter().enumerate() {
        let key = |k: &str| format!("interventions[{i}].{k}");
        let ok = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
        p.check(
            !s.name.is_empty() && s.name.chars().all(ok),
            &key("name"),
            || format!("{:?}: use letters, digits, `_`, `-` and `.` only", s.name),
        );
        p.check(!names[..i].contains(&s.name.as_str()), &key("name"), || {
            format!("`{}` names two interventions", s.name)
        });
        p.check(
            !(s.neurons.is_empty() && s.heads.is_empty() && s.steer.is_empty()),
            &format!("interventions[{i}]"),
            || "edits nothing: give neurons, heads or steer".into(),
        );
        let (lo, hi) = MEAN_PROMPTS;
        p.check(
            (lo..=hi).contains(&s.mean_prompts),
            &key("mean_prompts"),
            || format!("must be in {lo}..={hi}, got {}", s.mean_prompts),
        );
        for (k, _, a) in s.ablations(i) {
            p.check(!a.ids.is_empty(), &format!("{k}.ids"), || {
                "list at least one index".into()
            });
            p.check(no_duplicates(&a.ids), &format!("{k}.ids"), || {
                "lists an index twice".into()
            });
            if let AblationValue::Value(v) = a.value {
                p.check(v.is_finite(), &format!("{k}.value"), || {
                    format!("must be a finite number, got {v}")
                });
            }
        }
        for (j, st) in s.steer.iter().enumerate() {
            let k = format!("interventions[{i}].steer[{j}]");
            p.check(st.alpha.is_finite(), &format!("{k}.alpha"), || {
                format!("must be a finite number, got {}", st.alpha)
            });
            p.check(st.vector.is_some() != st.mean_diff.is_some(), &k, || {
                "give either `vector` (a file) or `mean_diff` (two prompt sets), not both".into()
            });
            if let Some(v) = &st.vector {
                p.check(
                    ["npy", "json"].contains(&extension(v).as_str()),
                    &format!("{k}.vector"),
                    || format!("{}: a vector is a .npy or .json file", v.display()),
                );
            }
            if let Some(m) = &st.mean_diff {
                for (side, f) in [("positive", &m.positive), ("negative", &m.negative)] {
                    p.check(
                        ["txt", "jsonl"].contains(&extension(f).as_str()),
                        &format!("{k}.mean_diff.{side}"),
                        || {
                            format!(
                                "{}: prompts are a .txt (one per line) or .jsonl (a `text` \
                                 field) file",
                                f.display()
                            )
                        },
                    );
                }
            }
        }
    }
}

/// Checks layers, neuron and head indices against the model.
pub(super) fn check_against(specs: &[InterventionSpec], dims: ModelDims, p: &mut Problems) {
    if specs.is_empty() {
        return;
    }
    if dims.encoder {
        p.add(
            "interventions",
            "edit generation: an encoder does not generate",
        );
        return;
    }
    let layer_ok = |l: i64| Selection::List(vec![l]).resolve(dims.n_layers).is_ok();
    let n = dims.n_layers;
    let layer_msg = |l: i64| {
        format!(
            "{l} is out of range: the model has {n} blocks (0..={}, or -{n}..=-1 from the end)",
            n - 1
        )
    };
    for (i, s) in specs.iter().enumerate() {
        for (k, neurons, a) in s.ablations(i) {
            p.check(layer_ok(a.layer), &format!("{k}.layer"), || {
                layer_msg(a.layer)
            });
            let (what, count) = if neurons {
                ("neurons", dims.widths.map(|w| w.1))
            } else {
                ("heads", Some(dims.n_heads))
            };
            if let Some(count) = count
                && let Some(bad) = a.ids.iter().find(|&&x| x >= count)
            {
                p.add(
                    &format!("{k}.ids"),
                    format!(
                        "{bad} is out of range: the model has {count} {what} per block (0..={})",
                        count - 1
                    ),
                );
            }
        }
        for (j, st) in s.steer.iter().enumerate() {
            p.check(
                layer_ok(st.layer),
                &format!("interventions[{i}].steer[{j}].layer"),
                || layer_msg(st.layer),
            );
        }
    }
}

/// Checks that the vector and prompt-set files exist.
pub(super) fn check_files(specs: &[InterventionSpec], p: &mut Problems) {
    for (i, s) in specs.iter().enumerate() {
        for (j, st) in s.steer.iter().enumerate() {
            let k = format!("interventions[{i}].steer[{j}]");
            let mut files = vec![];
            if let Some(v) = &st.vector {
                files.push((format!("{k}.vector"), v));
            }
            if let Some(m) = &st.mean_diff {
                files.push((format!("{k}.mean_diff.positive"), &m.positive));
                files.push((format!("{k}.mean_diff.negative"), &m.negative));
            }
            for (key, f) in files {
                p.check(f.is_file(), &key, || {
                    format!("{}: no such file", f.display())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ModelDims, PipelineSpec, Positions, SpecError};
    use super::*;

    const BASE: &str = "model: default\ndataset:\n  path: data/p.jsonl\noutput:\n  dir: out\n";

    fn parse(interventions: &str) -> Result<PipelineSpec, SpecError> {
        PipelineSpec::from_yaml(
            &format!("{BASE}interventions:\n{interventions}"),
            Path::new("pipelines/x.yaml"),
        )
    }

    fn err(interventions: &str) -> String {
        parse(interventions).unwrap_err().to_string()
    }

    #[test]
    fn every_form_parses_with_its_defaults() {
        let s = parse(
            "  - name: a
    neurons: {layer: 2, ids: [1, 5]}
  - name: b.2
    heads: [{layer: -1, ids: [0], value: mean}, {layer: 0, ids: [3], value: -2.5}]
    positions: generated
    mean_prompts: 10
  - name: c
    steer: {layer: 1, vector: v.npy}
  - name: d
    steer:
      - {layer: 1, alpha: -4, mean_diff: {positive: p.txt, negative: n.jsonl, token: mean}}
",
        )
        .unwrap();
        let iv = &s.interventions;
        assert_eq!(iv.len(), 4);
        assert_eq!(iv[0].neurons[0].value, AblationValue::Zero);
        assert_eq!(iv[0].positions, Positions::All);
        assert_eq!(iv[0].mean_prompts, 256);
        assert_eq!(iv[1].heads[0].value, AblationValue::Mean);
        assert_eq!(iv[1].heads[1].value, AblationValue::Value(-2.5));
        assert_eq!(iv[1].positions, Positions::Generated);
        assert_eq!(iv[2].steer[0].alpha, 1.0);
        // Paths resolve against the spec's directory.
        assert_eq!(
            iv[2].steer[0].vector.as_deref(),
            Some(Path::new("pipelines/v.npy"))
        );
        let m = iv[3].steer[0].mean_diff.as_ref().unwrap();
        assert_eq!(m.positive, Path::new("pipelines/p.txt"));
        assert_eq!(m.token, TokenChoice::Mean);
        assert_eq!(
            s.tables(),
            [
                "tokens",
                "generations",
                "interventions",
                "intervention_tokens",
                "intervention_edits"
            ]
        );
        // The manifest's copy reads back the same.
        let back: Vec<InterventionSpec> =
            serde_json::from_value(serde_json::to_value(iv).unwrap()).unwrap();
        assert_eq!(&back, iv);
    }

    #[test]
    fn malformed_entries_name_the_line() {
        assert_eq!(
            err("  - name: a\n    neurons: {layer: 1, ids: [1], value: half}\n"),
            "pipelines/x.yaml:8:42: interventions[0].neurons.value: invalid value: string \
             \"half\", expected `zero`, `mean` or a number"
        );
        assert!(
            err("  - name: a\n    neuron: {layer: 1, ids: [1]}\n")
                .starts_with("pipelines/x.yaml:8:5: interventions[0]: unknown field `neuron`"),
        );
        assert!(
            err("  - name: a\n    steer: {layer: 1, vectr: v.npy}\n")
                .contains("unknown field `vectr`")
        );
        assert!(err("  - neurons: {layer: 1, ids: [1]}\n").contains("missing field `name`"));
        assert!(
            err("  - name: a\n    heads: 3\n").contains("expected a mapping or a list of mappings")
        );
    }

    #[test]
    fn semantic_problems_are_listed_with_their_keys() {
        let e = err("  - name: a b
    neurons: {layer: 1, ids: [], value: .nan}
  - name: x
  - name: x
    heads: {layer: 0, ids: [2, 2]}
    mean_prompts: 0
  - name: s
    steer: [{layer: 1, alpha: .inf}, {layer: 1, vector: v.pt, mean_diff: {positive: p.csv, negative: n.txt}}]
");
        for want in [
            "interventions[0].name: \"a b\": use letters, digits, `_`, `-` and `.` only",
            "interventions[0].neurons[0].ids: list at least one index",
            "interventions[0].neurons[0].value: must be a finite number, got NaN",
            "interventions[1]: edits nothing: give neurons, heads or steer",
            "interventions[2].name: `x` names two interventions",
            "interventions[2].mean_prompts: must be in 1..=1000000, got 0",
            "interventions[2].heads[0].ids: lists an index twice",
            "interventions[3].steer[0].alpha: must be a finite number, got inf",
            "interventions[3].steer[0]: give either `vector` (a file) or `mean_diff` (two prompt \
             sets), not both",
            "interventions[3].steer[1]: give either `vector`",
            "interventions[3].steer[1].vector: pipelines/v.pt: a vector is a .npy or .json file",
            "interventions[3].steer[1].mean_diff.positive: pipelines/p.csv: prompts are a .txt",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let no_generation = PipelineSpec::from_yaml(
            &format!(
                "{BASE}generation: {{max_new_tokens: 0}}\ninterventions:\n  - name: a\n    \
                 neurons: {{layer: 0, ids: [1]}}\n"
            ),
            Path::new("pipelines/x.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            no_generation,
            "pipelines/x.yaml: interventions: edit generation: set generation.max_new_tokens >= 1"
        );
    }

    #[test]
    fn indices_are_checked_against_the_model() {
        let s = parse(
            "  - name: a
    neurons: {layer: -3, ids: [0, 1536]}
    heads: {layer: 3, ids: [9]}
    steer: {layer: 30, vector: v.json}
",
        )
        .unwrap();
        let dims = ModelDims {
            widths: Some((576, 1536)),
            ..ModelDims::decoder(30, 9, 8192)
        };
        let e = s.validate_against(dims).unwrap_err().to_string();
        assert_eq!(
            e,
            "pipelines/x.yaml: interventions[0].neurons[0].ids: 1536 is out of range: the model \
             has 1536 neurons per block (0..=1535)\n\
             pipelines/x.yaml: interventions[0].heads[0].ids: 9 is out of range: the model has 9 \
             heads per block (0..=8)\n\
             pipelines/x.yaml: interventions[0].steer[0].layer: 30 is out of range: the model has \
             30 blocks (0..=29, or -30..=-1 from the end)"
        );
        let encoder = ModelDims {
            encoder: true,
            ..dims
        };
        assert!(
            s.validate_against(encoder)
                .unwrap_err()
                .to_string()
                .contains("interventions: edit generation: an encoder does not generate")
        );
        let fine = parse("  - name: a\n    neurons: {layer: -30, ids: [1535]}\n").unwrap();
        fine.validate_against(dims).unwrap();
    }
}
