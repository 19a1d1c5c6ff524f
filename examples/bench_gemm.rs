//! f32 gemm rate (GFLOP/s) of the `gemm` crate, the product every layer of tokenlens' engine
//! runs, on the shapes of SmolLM2's reverse pass (rows x in x out), with the right-hand side read
//! as stored ([k, n] rows) and transposed ([n, k] rows, as the input-gradient products read the
//! weights), on THREADS threads (1: no parallelism; more: rayon, as the engine's top-level
//! products). `scripts/bench_gemm.sh` runs it against torch on the same shapes
//! (`scripts/bench.sh gemm`), to tell a slow CPU from a slow kernel: the saliency and
//! whole-workflow ratios against Ecco are bounded by these rates.
//!
//!   cargo run --release --example bench_gemm [ROWS [THREADS]]
//!
//! Prints a table, then one JSON line: {"rows", "threads", "shapes": [{"name", "k", "n",
//! "gflops", "gflops_transposed"}]}.
use std::time::Instant;

/// The shapes: SmolLM2's fused q|k|v, gate|up, down and o projections, and a square one.
pub const SHAPES: [(&str, usize, usize); 5] = [
    ("qkv", 576, 960),
    ("gate_up", 576, 3072),
    ("down", 1536, 576),
    ("o", 576, 576),
    ("square", 2048, 2048),
];

fn rate(m: usize, k: usize, n: usize, transposed: bool, threads: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let (rs, cs) = if transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
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
            par,
        )
    };
    run(&mut c);
    // About 4 GFLOP of timed work per figure.
    let reps = (4e9 / (2.0 * (m * k * n) as f64)).ceil().max(3.0) as usize;
    let t = Instant::now();
    for _ in 0..reps {
        run(&mut c);
    }
    2.0 * (m * k * n) as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// The same product through tokenlens' AMX bf16 kernel (`numerics::amx`; None without AMX), the
/// right-hand side packed once as the engine does (the left-hand side is rounded on every call).
fn rate_amx(m: usize, k: usize, n: usize, transposed: bool, threads: usize) -> Option<f64> {
    use tokenlens::numerics::{amx, wmat::WSlice};
    if !amx::available() {
        return None;
    }
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
    // The engine packs each weight once (`amx::Packs`) and reuses it: so does this.
    let packed = amx::PackedRhs::new(n, k, WSlice::F32(&b), rs, cs);
    let run = |c: &mut [f32]| amx::gemm_packed(m, c, n, false, &a, k, 1, &packed, threads);
    run(&mut c);
    let reps = (4e9 / (2.0 * (m * k * n) as f64)).ceil().max(3.0) as usize;
    let t = Instant::now();
    for _ in 0..reps {
        run(&mut c);
    }
    Some(2.0 * (m * k * n) as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9)
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map_or(Ok(default), |s| s.parse::<usize>())
            .unwrap_or_else(|e| panic!("argument {i}: {e}"))
    };
    let m = arg(1, 2000);
    let threads = arg(2, 1).max(1);
    if threads > 1 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .expect("the rayon pool");
    }
    println!("rows {m}, {threads} thread(s); GFLOP/s (rhs as stored / transposed)");
    let mut json = Vec::new();
    for (name, k, n) in SHAPES {
        let (s, t) = (rate(m, k, n, false, threads), rate(m, k, n, true, threads));
        let amx = (
            rate_amx(m, k, n, false, threads),
            rate_amx(m, k, n, true, threads),
        );
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{name:8} {k:5} -> {n:5} {s:7.1} {t:7.1}   amx bf16 {} {}",
            show(amx.0),
            show(amx.1)
        );
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.2}"));
        json.push(format!(
            "{{\"name\": \"{name}\", \"k\": {k}, \"n\": {n}, \"gflops\": {s:.2}, \"gflops_transposed\": {t:.2}, \"amx_bf16\": {}, \"amx_bf16_transposed\": {}}}",
            num(amx.0),
            num(amx.1)
        ));
    }
    println!(
        "{{\"rows\": {m}, \"threads\": {threads}, \"shapes\": [{}]}}",
        json.join(", ")
    );
}
