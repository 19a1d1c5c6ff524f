#!/usr/bin/env bash
# Memory benchmark (BENCHMARKS.md, "Pipeline throughput and memory"): pipelines/bench-memory.yaml
# (every table, NMF included) over the generated dataset of scripts/make_bench_dataset.py at 1x
# (40 prompts of 3-200 tokens, 5 windows) and 10x (400 different prompts, 50 windows), through
# scripts/bench_pipeline.sh: prompts, tokens, windows, wall, prompts/s, tokens/s, peak RSS, RSS
# over the first and second half of the windows and during NMF, what NMF held, rows per table.
#
# Usage: scripts/bench_memory.sh [SCALES...]     (default: 1 10)
# Env: THREADS (default 2), SAMPLE (seconds between RSS samples, default 1), LIMIT (first N
# prompts of each scale, for smoke runs), WORK (output directory).
# Outputs in WORK (default target/bench-memory/: datasets, specs, runs, rss-xS.tsv, results.json).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
gen="python3 scripts/make_bench_dataset.py"
# The committed 1x dataset is the generator's output (the spec validates and runs without it).
if ! $gen --scale 1 2>/dev/null | cmp -s - datasets/bench-memory.jsonl; then
  echo "error: datasets/bench-memory.jsonl differs from \`$gen --scale 1\`; regenerate it" >&2
  exit 1
fi
[ $# -gt 0 ] || set -- 1 10
GENERATOR=$gen WORK=${WORK:-target/bench-memory} exec scripts/bench_pipeline.sh pipelines/bench-memory.yaml "$@"
