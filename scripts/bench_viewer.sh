#!/usr/bin/env bash
# Viewer cold start on a large run: builds a 10,000-prompt run on the tiny Llama test checkpoint
# (predictions, lens, watch, gradient + grad x input saliency, attention + rollout; ~180 MB of
# Parquet), then runs the headless-Chromium test on it, which reports the time from navigation
# to the first document shown with its saliency. Needs chromium and `(cd viewer && npm ci)`.
#
# Usage: scripts/bench_viewer.sh [N_PROMPTS]      (default 10000; the run is kept in target/)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
n=${1:-10000}
work=target/bench-viewer
mkdir -p "$work"
build_release
python3 - "$work" "$n" <<'PY'
import json, random, sys
work, n = sys.argv[1], int(sys.argv[2])
words = "the a cat dog king queen river code far away upon time there on".split()
rng = random.Random(0)
with open(f"{work}/data.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"id": f"doc-{i:05d}", "text": " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))}) + "\n")
PY
cat > "$work/spec.yaml" <<YAML
model: $(pwd)/tests/data/tiny-llama
dataset: {path: data.jsonl, id_field: id}
generation: {max_new_tokens: 4}
analyses:
  predictions: {top_k: 3}
  saliency: {methods: [gradient, grad_x_input]}
  lens: {top_k: 3}
  watch: {tokens: [' the', ' cat']}
  attention: {layers: all, rollout: true}
output: {dir: run, overwrite: true}
YAML
if ! { [ -f "$work/run/manifest.json" ] && grep -q '"status": "done"' "$work/run/manifest.json"; }; then
  "$TOKENLENS_BIN" run --quiet "$work/spec.yaml"
fi
du -sh "$work/run"
for _ in 1 2 3; do
  node viewer/test/browser.mjs "$TOKENLENS_BIN" "$work/run" "$work/shots" | grep -E "fresh page|FAIL"
done
