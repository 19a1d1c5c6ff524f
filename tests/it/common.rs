//! Shared helpers: golden files, tolerances, paths of the test checkpoints and the real model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A golden file written by scripts/make_goldens.py: tensors plus the JSON sidecar.
pub struct Golden {
    pub tensors: HashMap<String, Tensor>,
    pub meta: serde_json::Value,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        let dir = data_dir().join("golden");
        let tensors =
            candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
                .unwrap_or_else(|e| panic!("golden {name}: {e}"));
        let meta = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        Golden { tensors, meta }
    }

    pub fn t(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden tensor {key} missing"))
    }

    pub fn prompts(&self) -> Vec<String> {
        self.meta["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    pub fn ids(&self, key: &str) -> Vec<Vec<u32>> {
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    }
}

/// max |a - b| and max |b|.
pub fn diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let d: f32 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    let m: f32 = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    (d, m)
}

/// Asserts max |a - b| <= tol * max(1, max |b|), i.e. an absolute tolerance scaled by magnitude.
/// Returns the scaled error so callers can report it.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> f32 {
    let (d, m) = diff(a, b);
    let scaled = d / m.max(1.0);
    assert!(
        scaled <= tol,
        "{what}: max abs diff {d:e} (reference max {m:e}) scaled {scaled:e} > {tol:e}"
    );
    scaled
}

/// The default real model (SmolLM2 GGUF), if fetched. In CI it must be there.
pub fn real_model() -> Option<PathBuf> {
    let p = tokenlens::model::default_model_path();
    if p.exists() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "CI: the default model is missing at {} (.ci/run fetches it)",
            p.display()
        );
    } else {
        eprintln!(
            "note: {} not found; run scripts/fetch-model.sh to include the real-model tests",
            p.display()
        );
        None
    }
}

/// A scratch directory unique to one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
