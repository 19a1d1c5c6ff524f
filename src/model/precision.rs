//! The dtype a model's weights are held in: the user's choice (`WeightDtype`: `auto`, `f32`,
//! `bf16`, `f16`) and its resolution against the dtype a checkpoint stores (`resolve`). Whatever
//! the choice, activations, norms, biases and every accumulation stay f32: a half-precision
//! model holds its matrices (linear layers, embeddings, unembedding) in that dtype and widens
//! them to f32 inside the matmul (`numerics::wmat`); every other parameter is kept as f32 holding
//! the dtype's values (rounded to nearest, ties to even, as torch's `.to(dtype)`).

use std::fmt;
use std::str::FromStr;

use candle_core::DType;
use serde::{Deserialize, Serialize};

/// The weights' dtype a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// The checkpoint's own: bf16 or f16 when its matrices are stored so (HF safetensors, GGUF
    /// F16/BF16), else f32 (f32/f64 checkpoints and quantized GGUF, whose dequantized values
    /// f32 holds exactly). So `auto` never rounds a weight.
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl WeightDtype {
    pub const NAMES: &'static str = "auto, f32, bf16, f16";

    /// The dtype to hold the matrices in, for a checkpoint whose matrices are stored as `stored`.
    pub fn resolve(self, stored: DType) -> DType {
        match self {
            WeightDtype::Auto => match stored {
                DType::BF16 | DType::F16 => stored,
                _ => DType::F32,
            },
            WeightDtype::F32 => DType::F32,
            WeightDtype::Bf16 => DType::BF16,
            WeightDtype::F16 => DType::F16,
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            WeightDtype::Auto => "auto",
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::F16 => "f16",
        })
    }
}

impl FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => WeightDtype::Auto,
            "f32" | "float32" => WeightDtype::F32,
            "bf16" | "bfloat16" => WeightDtype::Bf16,
            "f16" | "float16" => WeightDtype::F16,
            other => {
                return Err(format!(
                    "unknown dtype `{other}` (expected one of: {})",
                    Self::NAMES
                ));
            }
        })
    }
}

/// The precision of the weight matrices' products (`compute:` in a pipeline's `model:`,
/// `--compute` on the command line). `f32` (default): activations stay f32 into every product,
/// exact with respect to the held weights. `bf16`: both operands of every weight product
/// (linear layers and the unembedding, in the forward and the reverse pass) are rounded to bf16
/// and the products summed in f32, as torch's bf16 matmul does; on CPUs with AMX (Intel
/// Sapphire Rapids and later) it runs on the tile unit, 2-4x faster than f32 there; elsewhere it
/// gives the same numbers at f32 speed. Norms, attention, nonlinearities and every sum stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    #[default]
    F32,
    Bf16,
}

impl Compute {
    pub const NAMES: &'static str = "f32, bf16";
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
        })
    }
}

impl FromStr for Compute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Compute::F32),
            "bf16" | "bfloat16" => Ok(Compute::Bf16),
            other => Err(format!(
                "unknown compute precision `{other}` (expected one of: {})",
                Self::NAMES
            )),
        }
    }
}

/// The short name of a resolved dtype (`f32`, `bf16`, `f16`).
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_half_checkpoints_and_widens_the_rest() {
        assert_eq!(WeightDtype::Auto.resolve(DType::BF16), DType::BF16);
        assert_eq!(WeightDtype::Auto.resolve(DType::F16), DType::F16);
        assert_eq!(WeightDtype::Auto.resolve(DType::F32), DType::F32);
        assert_eq!(WeightDtype::Auto.resolve(DType::F64), DType::F32);
        assert_eq!(WeightDtype::Bf16.resolve(DType::F32), DType::BF16);
        assert_eq!(WeightDtype::F32.resolve(DType::BF16), DType::F32);
    }

    #[test]
    fn names_parse_and_print() {
        for d in [
            WeightDtype::Auto,
            WeightDtype::F32,
            WeightDtype::Bf16,
            WeightDtype::F16,
        ] {
            assert_eq!(d.to_string().parse::<WeightDtype>(), Ok(d));
        }
        assert_eq!("bfloat16".parse::<WeightDtype>(), Ok(WeightDtype::Bf16));
        assert_eq!(
            "int8".parse::<WeightDtype>().unwrap_err(),
            "unknown dtype `int8` (expected one of: auto, f32, bf16, f16)"
        );
    }
}
