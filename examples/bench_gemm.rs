//! Single-thread f32 gemm rate (GFLOPS) of the `gemm` crate on the shapes of SmolLM2's reverse
//! pass (rows per thread x in x out), with the right-hand side read as stored ([k, n] rows) and
//! transposed ([n, k] rows, as the input-gradient products read the weights). Compare with
//! torch / numpy on the same shapes to see whether a CPU's slowness is the gemm kernel's.
//!
//!   cargo run --release --example bench_gemm [ROWS]
use std::time::Instant;

fn rate(m: usize, k: usize, n: usize, transposed: bool) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let (rs, cs) = if transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let run = |c: &mut [f32]| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            cs,
            rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    run(&mut c);
    let reps = (2e9 / (2.0 * (m * k * n) as f64)).ceil().max(3.0) as usize;
    let t = Instant::now();
    for _ in 0..reps {
        run(&mut c);
    }
    2.0 * (m * k * n) as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let m: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(160);
    println!("rows {m}, one thread; GFLOPS (rhs as stored / transposed)");
    for (name, k, n) in [
        ("q|k|v 576 -> 960", 576, 960),
        ("gate|up 576 -> 3072", 576, 3072),
        ("down 1536 -> 576", 1536, 576),
        ("o 576 -> 576", 576, 576),
        ("square 2048", 2048, 2048),
    ] {
        println!(
            "{name:22} {:7.1} {:7.1}",
            rate(m, k, n, false),
            rate(m, k, n, true)
        );
    }
}
