//! Helpers for the unit tests of the model and analysis modules.

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use super::Model;

/// max |a - b|.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Deterministic values in [-1, 1) without a RNG crate.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Checks autodiff's gradient of the scalar `f` at `x0` against central finite differences,
/// on every `stride`-th element.
pub fn check_gradient(f: impl Fn(&Tensor) -> Tensor, x0: &Tensor, stride: usize) {
    let var = Var::from_tensor(x0).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let g: Vec<f32> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-2f32;
    for i in (0..base.len()).step_by(stride) {
        let (mut plus, mut minus) = (base.clone(), base.clone());
        plus[i] += eps;
        minus[i] -= eps;
        let t = |v: Vec<f32>| Tensor::from_vec(v, x0.shape(), &Device::Cpu).unwrap();
        let fp: f32 = f(&t(plus)).to_scalar().unwrap();
        let fm: f32 = f(&t(minus)).to_scalar().unwrap();
        let fd = (fp - fm) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() < 2e-2 * (1.0 + fd.abs()),
            "element {i}: autodiff {} vs fd {fd}",
            g[i]
        );
    }
}

/// One of the tiny checkpoints in tests/data (`tiny-gpt2`, `tiny-llama`, `tiny-qwen2`).
pub fn tiny_model(name: &str) -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    Model::load(&dir, None).unwrap()
}
