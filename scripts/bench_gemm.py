#!/usr/bin/env python3
"""torch's matmul rate (GFLOP/s) on the shapes of examples/bench_gemm.rs, in float32 and bfloat16
(through oneDNN: AMX or AVX-512 BF16 where the CPU has them), the right-hand side as stored
([k, n]) and transposed ([n, k] rows, a view). Run by scripts/bench_gemm.sh.

  python3 scripts/bench_gemm.py --rows 2000 --threads 2

Prints one JSON line: {"rows", "threads", "torch", "shapes": [{"name", "k", "n", "f32",
"f32_transposed", "bf16", "bf16_transposed"}]}.
"""
import argparse
import json
import time

import torch

SHAPES = [("qkv", 576, 960), ("gate_up", 576, 3072), ("down", 1536, 576), ("o", 576, 576),
          ("square", 2048, 2048)]


def rate(m, k, n, dtype, transposed):
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(n, k).to(dtype).t() if transposed else torch.randn(k, n).to(dtype)
    a @ b
    reps = max(3, int(4e9 / (2 * m * k * n) + 0.999))  # about 4 GFLOP timed, as the Rust side
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = []
    for name, k, n in SHAPES:
        shapes.append({"name": name, "k": k, "n": n,
                       "f32": round(rate(args.rows, k, n, torch.float32, False), 2),
                       "f32_transposed": round(rate(args.rows, k, n, torch.float32, True), 2),
                       "bf16": round(rate(args.rows, k, n, torch.bfloat16, False), 2),
                       "bf16_transposed": round(rate(args.rows, k, n, torch.bfloat16, True), 2)})
    print(json.dumps({"rows": args.rows, "threads": args.threads, "torch": torch.__version__,
                      "shapes": shapes}))


if __name__ == "__main__":
    main()
