#!/usr/bin/env bash
# The f32 gemm rate on SmolLM2's reverse-pass shapes: the gemm crate (examples/bench_gemm.rs, the
# product tokenlens' engine runs) against torch's matmul in float32 and bfloat16
# (scripts/bench_gemm.py), same rows, shapes and thread count, the two sides alternating for
# ROUNDS rounds (odd rounds: tokenlens first). The saliency and whole-workflow ratios against Ecco
# are bounded by these rates (BENCHMARKS.md, "Why >= 10x with integrated gradients is out of
# reach in f32 on this CPU"). Needs the reference venv ($REFENV_PY; scripts/README.md).
#
# Usage: [ROUNDS=3] [OUT=DIR] [ROWS=2000] scripts/bench_gemm.sh [THREADS]   (THREADS default 2)
# Outputs: OUT (default target/bench-gemm/<UTC time>/): every round's JSON line per side, and
#   results.json (per shape: each side's GFLOP/s per round, medians, tokenlens / torch f32 and
#   torch bf16 / torch f32; on a CPU with AMX also tokenlens' bf16 kernel, numerics::amx, the
#   products `compute: bf16` runs, and its ratio to torch bf16); the table goes to stdout.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
ROUNDS=${ROUNDS:-3}
ROWS=${ROWS:-2000}
threads=${1:-2}
out=${OUT:-target/bench-gemm/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
cargo build --release --quiet --example bench_gemm ||
  { echo "error: building examples/bench_gemm.rs failed" >&2; exit 1; }
machine_line "" | tee "$out/machine.txt"
run_tokenlens() {  # round
  RAYON_NUM_THREADS=$threads target/release/examples/bench_gemm "$ROWS" "$threads" >"$out/r$1.tokenlens.out" 2>&1 ||
    { echo "error: examples/bench_gemm failed; $out/r$1.tokenlens.out ends with:" >&2; tail -n 20 "$out/r$1.tokenlens.out" >&2; exit 1; }
}
run_torch() {  # round
  OMP_NUM_THREADS=$threads "$REFENV_PY" scripts/bench_gemm.py --rows "$ROWS" --threads "$threads" \
    >"$out/r$1.torch.out" 2>"$out/r$1.torch.log" ||
    { echo "error: scripts/bench_gemm.py failed; $out/r$1.torch.log ends with:" >&2; tail -n 20 "$out/r$1.torch.log" >&2; exit 1; }
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then run_tokenlens "$round"; run_torch "$round"; else run_torch "$round"; run_tokenlens "$round"; fi
  echo "round $round done"
done
python3 - "$out" "$ROUNDS" "ROUNDS=$ROUNDS ROWS=$ROWS scripts/bench_gemm.sh $threads" <<'PY'
import json, statistics, sys
out, rounds, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]
last = lambda path: json.loads(open(path).read().strip().splitlines()[-1])
ours = [last(f"{out}/r{r}.tokenlens.out") for r in range(1, rounds + 1)]
torch = [last(f"{out}/r{r}.torch.out") for r in range(1, rounds + 1)]
med = statistics.median
res = {"comparison": "gemm", "command": command, "rounds": rounds, "rows": ours[0]["rows"],
       "threads": ours[0]["threads"], "torch": torch[0]["torch"], "unit": "GFLOP/s",
       "ratio": "tokenlens (gemm crate, f32) / torch f32 (>1: tokenlens faster)", "shapes": []}
amx = all(x["shapes"][0].get("amx_bf16") is not None for x in ours)
res["amx"] = amx
print(f"{'shape':8} {'k':>5} {'n':>5} {'tokenlens f32':>14} {'torch f32':>10} {'ratio':>6} {'torch bf16':>11} {'bf16/f32':>9}"
      + (f" {'tokenlens amx bf16':>19} {'/torch bf16':>11}" if amx else ""))
for i, s in enumerate(ours[0]["shapes"]):
    o = [x["shapes"][i] for x in ours]
    t = [x["shapes"][i] for x in torch]
    assert all(x["name"] == s["name"] for x in o + t), "the two sides' shapes differ"
    row = {"name": s["name"], "k": s["k"], "n": s["n"],
           "tokenlens_f32": [x["gflops"] for x in o], "tokenlens_f32_transposed": [x["gflops_transposed"] for x in o],
           "torch_f32": [x["f32"] for x in t], "torch_f32_transposed": [x["f32_transposed"] for x in t],
           "torch_bf16": [x["bf16"] for x in t], "torch_bf16_transposed": [x["bf16_transposed"] for x in t]}
    for key in list(row):
        if isinstance(row[key], list):
            row["median_" + key] = med(row[key])
    row["ratio"] = row["median_tokenlens_f32"] / row["median_torch_f32"]
    row["ratio_transposed"] = row["median_tokenlens_f32_transposed"] / row["median_torch_f32_transposed"]
    row["torch_bf16_over_f32"] = row["median_torch_bf16"] / row["median_torch_f32"]
    extra = ""
    if amx:
        row["tokenlens_amx_bf16"] = [x["amx_bf16"] for x in o]
        row["tokenlens_amx_bf16_transposed"] = [x["amx_bf16_transposed"] for x in o]
        row["median_tokenlens_amx_bf16"] = med(row["tokenlens_amx_bf16"])
        row["median_tokenlens_amx_bf16_transposed"] = med(row["tokenlens_amx_bf16_transposed"])
        row["amx_over_torch_bf16"] = row["median_tokenlens_amx_bf16"] / row["median_torch_bf16"]
        extra = f" {row['median_tokenlens_amx_bf16']:19.1f} {row['amx_over_torch_bf16']:11.2f}"
    res["shapes"].append(row)
    print(f"{s['name']:8} {s['k']:5} {s['n']:5} {row['median_tokenlens_f32']:14.1f} {row['median_torch_f32']:10.1f} "
          f"{row['ratio']:6.2f} {row['median_torch_bf16']:11.1f} {row['torch_bf16_over_f32']:9.2f}" + extra)
json.dump(res, open(f"{out}/results.json", "w"), indent=1)
PY
echo "outputs in $out"
