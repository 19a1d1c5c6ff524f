#!/usr/bin/env bash
# Runs every tokenlens test: fetches the real models (cached: the default SmolLM2, the BERT
# encoder all-MiniLM-L6-v2 and Gemma 3 270M, whose tests fail without them), runs the Rust unit and
# integration tests, then the quickstart, paired IOI and interventions pipelines on the real model
# (release build) and reads every table they wrote with Python polars, pandas and duckdb (wheels
# installed into target/interop-venv), runs a sharded pipeline under a real Slurm
# (scripts/slurm.sh), and tests the viewer in headless Chromium on the runs. This is exactly
# what CI runs (.ci/run).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
# Every real-model test runs here: none may skip (tests/it/real_models.rs).
unset TOKENLENS_SKIP_REAL_MODELS
fetch_model >/dev/null
scripts/fetch-model.sh minilm >/dev/null
scripts/fetch-model.sh gemma3 >/dev/null
# In the release profile: the tests and the release binary the runs below use share one build
# of the dependencies (a clean build of them takes ~10 min on 2 cores; a debug-profile test build
# would make them a second time), and the real-model tests run at full speed.
cargo test --release --all-targets

# Interop: a real quickstart run, read by the Python readers our users use.
venv=target/interop-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import polars, pandas, pyarrow, duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check polars pandas pyarrow duckdb
fi
build_release
"$TOKENLENS_BIN" run --quiet --overwrite pipelines/quickstart.yaml
"$TOKENLENS_BIN" schema > target/tokenlens-schema.json
"$venv/bin/python" tests/interop/check_tables.py runs/quickstart target/tokenlens-schema.json
# A paired dataset on the real model: activation patching, contrastive saliency from the
# corrupted baseline, the `pairs` table (pipelines/ioi.yaml, its first 8 pairs: ~2 min).
"$TOKENLENS_BIN" run --quiet --overwrite --limit 8 pipelines/ioi.yaml
"$venv/bin/python" tests/interop/check_tables.py runs/ioi target/tokenlens-schema.json
# Interventions during generation on the real model: ablations and a mean-difference steering
# vector (pipelines/interventions.yaml, its first 8 prompts: ~15 s).
"$TOKENLENS_BIN" run --quiet --overwrite --limit 8 pipelines/interventions.yaml
"$venv/bin/python" tests/interop/check_tables.py runs/interventions target/tokenlens-schema.json
# Two real runs compared (pipelines/quickstart-bf16.yaml: the quickstart's prompts with bf16
# weights, ~1 min): the run diff and the layer similarity of their residual streams, into a
# comparison directory read by the same readers.
"$TOKENLENS_BIN" run --quiet --overwrite pipelines/quickstart-bf16.yaml
"$TOKENLENS_BIN" compare --quiet --overwrite runs/quickstart runs/quickstart-bf16 --out runs/compare-bf16
"$venv/bin/python" tests/interop/check_tables.py runs/compare-bf16 target/tokenlens-schema.json

# Shards under a real scheduler: Slurm on this machine (installed from Debian if missing), an
# array of 4 shards, the NMF step depending on it, a cancelled task resumed (~45 s).
scripts/slurm.sh

# The viewer in a real browser (Debian's chromium, headless, driven by playwright-core) on the
# quickstart run: values shown equal the Parquet's, clicks change the saliency display.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq chromium >/dev/null; else sudo apt-get install -y -qq chromium >/dev/null; fi
fi
(cd viewer && npm ci --silent --no-audit --no-fund)
node viewer/test/browser.mjs "$TOKENLENS_BIN" runs/quickstart target/viewer-screenshots
node viewer/test/browser.mjs "$TOKENLENS_BIN" runs/ioi target/viewer-screenshots/ioi
node viewer/test/browser.mjs "$TOKENLENS_BIN" runs/interventions target/viewer-screenshots/interventions
node viewer/test/browser.mjs "$TOKENLENS_BIN" runs/compare-bf16 target/viewer-screenshots/compare-bf16
