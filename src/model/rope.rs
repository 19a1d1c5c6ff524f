//! RoPE frequencies: the plain inverse frequencies `theta^(-2i/d)` and the long-context scalings
//! of transformers' `rope_scaling` / `rope_parameters` (`rope_type` `linear`, `dynamic`, `llama3`,
//! `yarn`), parsed from a config and computed as transformers' `modeling_rope_utils` does. The
//! table of cos and sin per position that the forward and reverse passes read is
//! [`RopeTable`](super::ops::RopeTable).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The RoPE types tokenlens computes (transformers' `rope_type`).
pub const SUPPORTED_ROPE_TYPES: &str = "default, linear, dynamic, llama3, yarn, longrope";

/// How the RoPE frequencies are scaled for a longer context.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Plain RoPE (`default`).
    Default,
    /// Every frequency divided by `factor` (positions interpolated).
    Linear { factor: f64 },
    /// Dynamic NTK: the base grows with the sequence length, but only past
    /// `max_position_embeddings`; tokenlens never runs past it (longer sequences are an error),
    /// so within the context it is plain RoPE.
    Dynamic { factor: f64 },
    /// Llama 3.x: wavelengths longer than `original_max_position_embeddings / low_freq_factor`
    /// divided by `factor`, shorter than `.. / high_freq_factor` kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN: interpolated (divided by `factor`) and extrapolated frequencies blended by a linear
    /// ramp over the dimensions between the `beta_fast` and `beta_slow` rotation counts, cos and
    /// sin multiplied by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        /// Round the ramp's ends to whole dimensions (transformers' default).
        truncate: bool,
    },
    /// Each inverse frequency divided by its own factor, as GGUF files of Llama 3.x carry their
    /// `llama3` scaling (tensor `rope_freqs.weight`, llama.cpp's `freq_factors`).
    Factors { factors: Vec<f32> },
    /// LongRoPE (Phi-3): each inverse frequency divided by its own `short_factor`, cos and sin
    /// multiplied by `attention_factor`. transformers switches to the long factors once a
    /// sequence passes `original_max_position_embeddings`; tokenlens runs such models within
    /// that original context (the config's context is reduced to it when parsing), where the
    /// short factors are exact.
    LongRope {
        short_factor: Vec<f32>,
        attention_factor: f64,
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// From an HF config: `rope_scaling` (transformers < 5) or `rope_parameters` (>= 5), either
    /// absent or of type `default` meaning plain RoPE. `max_position_embeddings` is the config's.
    pub fn from_hf(path: &Path, config: &Value, max_position_embeddings: usize) -> Result<Self> {
        let params = ["rope_scaling", "rope_parameters"]
            .iter()
            .filter_map(|k| config.get(*k).filter(|x| !x.is_null()))
            .next();
        Self::from_hf_params(path, config, params, max_position_embeddings)
    }

    /// LongRoPE's default attention factor (transformers, llama.cpp): sqrt(1 + ln(factor) /
    /// ln(original context)), or 1 when the context is not extended.
    pub fn longrope_attention_factor(factor: f64, original: f64) -> f64 {
        if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / original.ln()).sqrt()
        }
    }

    /// As `from_hf`, from the RoPE parameters `params` given apart (e.g. those of one layer
    /// type); an older config's top-level `rope_scaling` wins.
    pub fn from_hf_params(
        path: &Path,
        config: &Value,
        params: Option<&Value>,
        max_position_embeddings: usize,
    ) -> Result<Self> {
        let top = config.get("rope_scaling").filter(|x| !x.is_null());
        let Some(p) = top.or(params) else {
            return Ok(RopeScaling::Default);
        };
        let key = |k: &str| format!("rope_scaling.{k}");
        let num = |k: &str| -> Result<Option<f64>> {
            match p.get(k).filter(|x| !x.is_null()) {
                None => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| {
                    Error::model(path, format!("field `{}`: expected a number", key(k)))
                }),
            }
        };
        let need = |k: &str| -> Result<f64> {
            num(k)?.ok_or_else(|| Error::model(path, format!("field `{}`: missing", key(k))))
        };
        // As transformers' `standardize_rope_params`: a top-level `original_max_position_embeddings`
        // (Phi-3 style) wins over the one in the RoPE parameters; the default is the context.
        let original = || -> Result<f64> {
            let top = config
                .get("original_max_position_embeddings")
                .and_then(|x| x.as_f64());
            Ok(match top {
                Some(o) => o,
                None => num("original_max_position_embeddings")?
                    .unwrap_or(max_position_embeddings as f64),
            })
        };
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(|x| x.as_str())
            .unwrap_or("default");
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: need("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: original()?,
            },
            "yarn" => {
                let original = original()?;
                // As transformers: without a factor, the ratio of the two contexts.
                let factor = match num("factor")? {
                    Some(f) => f,
                    None => max_position_embeddings as f64 / original,
                };
                let mscale = |scale: f64, m: f64| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                let attention_factor = match (
                    num("attention_factor")?,
                    num("mscale")?,
                    num("mscale_all_dim")?,
                ) {
                    (Some(a), _, _) => a,
                    (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                        mscale(factor, m) / mscale(factor, all)
                    }
                    _ => mscale(factor, 1.0),
                };
                RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: original,
                    beta_fast: num("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0),
                    beta_slow: num("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                    attention_factor,
                    truncate: p.get("truncate").and_then(|x| x.as_bool()).unwrap_or(true),
                }
            }
            "longrope" => {
                let original = original()?;
                let factor = match num("factor")? {
                    Some(f) => f,
                    None => max_position_embeddings as f64 / original,
                };
                let attention_factor = match num("attention_factor")? {
                    Some(a) => a,
                    None => Self::longrope_attention_factor(factor, original),
                };
                let short = p
                    .get("short_factor")
                    .and_then(|x| x.as_array())
                    .ok_or_else(|| {
                        Error::model(path, format!("field `{}`: missing", key("short_factor")))
                    })?;
                let short_factor = short
                    .iter()
                    .map(|x| x.as_f64().map(|v| v as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| {
                        Error::model(
                            path,
                            format!("field `{}`: expected numbers", key("short_factor")),
                        )
                    })?;
                RopeScaling::LongRope {
                    short_factor,
                    attention_factor,
                    original_max_position_embeddings: original as usize,
                }
            }
            other => {
                return Err(Error::model(
                    path,
                    format!(
                        "rope scaling `{other}` is not supported (supported: {SUPPORTED_ROPE_TYPES})"
                    ),
                ));
            }
        };
        if let RopeScaling::Linear { factor }
        | RopeScaling::Dynamic { factor }
        | RopeScaling::Llama3 { factor, .. }
        | RopeScaling::Yarn { factor, .. } = scaling
            && !(factor.is_finite() && factor > 0.0)
        {
            return Err(Error::model(
                path,
                format!("field `{}`: must be > 0, got {factor}", key("factor")),
            ));
        }
        Ok(scaling)
    }

    /// The inverse frequency of each pair of dimensions (`head_dim / 2` of them) and the factor
    /// cos and sin are multiplied by.
    pub fn inv_freq(&self, head_dim: usize, theta: f64) -> (Vec<f32>, f32) {
        let half = head_dim / 2;
        // As transformers: base^(2i/d) in f32.
        let plain: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        match *self {
            RopeScaling::Default | RopeScaling::Dynamic { .. } => (plain, 1.0),
            RopeScaling::Factors { ref factors } => {
                (plain.iter().zip(factors).map(|(f, d)| f / d).collect(), 1.0)
            }
            RopeScaling::LongRope {
                ref short_factor,
                attention_factor,
                ..
            } => (
                // As transformers: 1 / (factor * base^(2i/d)) in f32.
                (0..half)
                    .map(|i| {
                        let e = (theta as f32).powf((2 * i) as f32 / head_dim as f32);
                        1.0 / (short_factor.get(i).copied().unwrap_or(1.0) * e)
                    })
                    .collect(),
                attention_factor as f32,
            ),
            RopeScaling::Linear { factor } => {
                (plain.iter().map(|f| f / factor as f32).collect(), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let scaled = plain
                    .iter()
                    .map(|&f| {
                        let f = f as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .map(|f| f as f32)
                    .collect();
                (scaled, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                let dim = head_dim as f64;
                let correction_dim = |rotations: f64| {
                    dim * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
                if truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
                if low == high {
                    high += 0.001; // as transformers: no division by zero
                }
                let scaled = plain
                    .iter()
                    .enumerate()
                    .map(|(i, &extrapolation)| {
                        let ramp = ((i as f32 - low as f32) / (high - low) as f32).clamp(0.0, 1.0);
                        let keep = 1.0 - ramp;
                        let interpolation = extrapolation / factor as f32;
                        interpolation * (1.0 - keep) + extrapolation * keep
                    })
                    .collect();
                (scaled, attention_factor as f32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(scaling: &str, max_pos: usize) -> Result<RopeScaling> {
        let v: Value = serde_json::from_str(&format!(r#"{{"rope_scaling": {scaling}}}"#)).unwrap();
        RopeScaling::from_hf(Path::new("c.json"), &v, max_pos)
    }

    #[test]
    fn parses_every_type_and_names_bad_fields() {
        assert_eq!(parse("null", 8).unwrap(), RopeScaling::Default);
        assert_eq!(
            parse(r#"{"type": "linear", "factor": 2.0}"#, 8).unwrap(),
            RopeScaling::Linear { factor: 2.0 }
        );
        let l3 = r#"{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#;
        assert!(matches!(
            parse(l3, 131072).unwrap(),
            RopeScaling::Llama3 { .. }
        ));
        // YaRN without a factor: the ratio of the contexts; the attention factor 0.1 ln(factor) + 1.
        let RopeScaling::Yarn {
            factor,
            attention_factor,
            original_max_position_embeddings,
            ..
        } = parse(
            r#"{"rope_type": "yarn", "original_max_position_embeddings": 16}"#,
            64,
        )
        .unwrap()
        else {
            panic!()
        };
        assert_eq!((factor, original_max_position_embeddings), (4.0, 16.0));
        assert!((attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
        let e = parse(r#"{"rope_type": "proportional", "factor": 2.0}"#, 8)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "c.json: rope scaling `proportional` is not supported (supported: default, linear, \
             dynamic, llama3, yarn, longrope)"
        );
        let e = parse(
            r#"{"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}"#,
            8,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "c.json: field `rope_scaling.low_freq_factor`: missing");
        let e = parse(r#"{"rope_type": "linear", "factor": "x"}"#, 8)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.json: field `rope_scaling.factor`: expected a number");
        let e = parse(r#"{"rope_type": "linear", "factor": 0}"#, 8)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.json: field `rope_scaling.factor`: must be > 0, got 0");
    }

    #[test]
    fn llama3_keeps_high_scales_low_and_ramps_between() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16.0,
        };
        let (plain, _) = RopeScaling::Default.inv_freq(16, 10_000.0);
        let (scaled, a) = s.inv_freq(16, 10_000.0);
        assert_eq!(a, 1.0);
        for (p, q) in plain.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f32::consts::PI / p;
            if wavelen < 4.0 {
                assert_eq!(p, q);
            } else if wavelen > 16.0 {
                assert!((q - p / 8.0).abs() <= 1e-7 * p, "{p} {q}");
            } else {
                assert!(*q < *p && *q > p / 8.0, "{p} {q}");
            }
        }
    }
}
