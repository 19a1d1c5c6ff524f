#!/usr/bin/env bash
# Runs every tokenlens test: fetches the default real model (cached), then the Rust unit and
# integration tests. This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >/dev/null
cargo test --all-targets
