//! GGUF tensor types: every type llama.cpp files use in practice, dequantized by tokenlens (the
//! one code path `gguf::load` takes, `gguf::dequantize_tensor`), equals the gguf Python
//! package's own dequantization (`gguf.quants.dequantize`) of the same random blocks
//! (tests/data/quants/, made by scripts/make_quant_goldens.py).

use std::fs::File;
use std::io::BufReader;

use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use tokenlens::model::gguf::dequantize_tensor;

use crate::common::data_dir;

/// The types checked and the largest absolute difference allowed. Every one is exact: both sides
/// widen the f16 (or bf16) scales and values to f32 exactly and then do the same f32 operations
/// in the same order (`d * q`, `d * q + m`, `(d * sc) * q - dmin * m`), each rounded once.
const TYPES: &[(&str, f32)] = &[
    ("F32", 0.0),
    ("F16", 0.0),
    ("BF16", 0.0),
    ("Q4_0", 0.0),
    ("Q4_1", 0.0),
    ("Q5_0", 0.0),
    ("Q5_1", 0.0),
    ("Q8_0", 0.0),
    ("Q2_K", 0.0),
    ("Q3_K", 0.0),
    ("Q4_K", 0.0),
    ("Q5_K", 0.0),
    ("Q6_K", 0.0),
];

#[test]
fn every_gguf_type_dequantizes_like_gguf_py() {
    let dir = data_dir().join("quants");
    let path = dir.join("quants.gguf");
    let mut reader = BufReader::new(File::open(&path).unwrap());
    let content = Content::read(&mut reader).unwrap();
    let golden =
        candle_core::safetensors::load(dir.join("dequantized.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&str> = content.tensor_infos.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "the GGUF's tensors");
    assert_eq!(golden.len(), TYPES.len(), "the golden's tensors");
    for &(name, tol) in TYPES {
        // Each tensor is named after its type; candle spells the K-quants without `_`.
        let dtype = format!("{:?}", content.tensor_infos[name].ggml_dtype);
        assert_eq!(
            dtype.replace('_', ""),
            name.replace('_', ""),
            "{name}: tensor type"
        );
        let ours = dequantize_tensor(&path, &content, &mut reader, name).unwrap();
        let reference = &golden[name];
        assert_eq!(ours.dims(), reference.dims(), "{name}: shape");
        let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
        let max_err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let max_abs = b.iter().fold(0f32, |m, y| m.max(y.abs()));
        println!("{name:5} max |tokenlens - gguf-py| = {max_err:e} (max |value| {max_abs:.3})");
        assert!(a.iter().all(|x| x.is_finite()), "{name}: non-finite values");
        assert!(
            max_err <= tol,
            "{name}: max abs error {max_err:e} > {tol:e}"
        );
    }
}
