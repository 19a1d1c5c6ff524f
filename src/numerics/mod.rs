//! Numerics shared by the model engine and the analyses, on raw f32 slices: the seeded RNG
//! (`rng`), gemm wrappers and a transpose (`matrix`), run-time SIMD dispatch (`simd`), scalar
//! math written for loops the compiler vectorizes (`math`), and the uninitialized output
//! buffers and shared pointers that parallel kernels write through (`buffer`), and weight
//! matrices stored in f32, bf16 or f16 multiplied in f32 (`wmat`), and the eigendecomposition
//! of symmetric matrices in f64 (`eigen`). It knows nothing of models,
//! tensors or analyses: it depends on std and the gemm, half and rayon crates only.

pub mod amx;
pub mod buffer;
pub mod eigen;
pub mod math;
pub mod matrix;
pub mod rng;
pub mod simd;
pub mod wmat;
