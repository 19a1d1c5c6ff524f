#!/usr/bin/env bash
# Side-by-side forward benchmark: tokenlens (criterion, benches/forward.rs) and transformers
# (scripts/bench_forward_transformers.py) on the same model, ids and thread count, one after the
# other in one run. Prints tokens/s for each and the ratio. Needs the reference venv
# (PY=/work/refenv/bin/python by default; see scripts/README.md).
#
# Usage: scripts/bench_forward.sh [THREADS...]     (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/refenv/bin/python}
model=$(scripts/fetch-model.sh)
threads=${*:-1 2}
printf '%-8s %-22s %14s %14s %8s\n' threads capture tokenlens_tok/s transformers_tok/s ratio
for t in $threads; do
  RAYON_NUM_THREADS=$t cargo bench --quiet --bench forward -- --noplot >/dev/null 2>&1
  for mode in all logits; do
    case $mode in all) name=forward_all_captures ;; logits) name=forward_logits_only ;; esac
    est=target/criterion/smollm2_8x64/$name/new/estimates.json
    ours=$(python3 -c "import json;print(512/(json.load(open('$est'))['median']['point_estimate']/1e9))")
    theirs=$(OMP_NUM_THREADS=$t "$PY" scripts/bench_forward_transformers.py --gguf "$model" --threads "$t" --mode $mode 2>/dev/null \
      | python3 -c "import json,sys;print(json.loads(sys.stdin.read().strip().splitlines()[-1])['tokens_per_s'])")
    python3 -c "print('%-8s %-22s %14.1f %14.1f %8.2f' % ('$t', '$mode', $ours, $theirs, $ours/$theirs))"
  done
done
