#!/usr/bin/env bash
# Side-by-side forward benchmark: tokenlens (criterion, benches/forward.rs) and transformers
# (scripts/bench_forward_transformers.py) on the same model, token ids and thread count. The two
# alternate for ROUNDS rounds (this machine is noisy: compare ratios measured back to back) and the
# script prints every round's tokens/s and ratio, then the median ratio.
# Needs the reference venv ($REFENV_PY; see scripts/lib.sh and scripts/README.md).
#
# Usage: scripts/bench_forward.sh [THREADS...]     (default: 1 2; ROUNDS=3)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
ROUNDS=${ROUNDS:-3}
model=$(fetch_model)
threads=${*:-1 2}
cargo bench --quiet --bench forward --no-run >/dev/null 2>&1
machine_line ""
printf '%-8s %-8s %-6s %16s %19s %7s\n' threads capture round tokenlens_tok/s transformers_tok/s ratio
results=$(mktemp)
for t in $threads; do
  for round in $(seq 1 "$ROUNDS"); do
    RAYON_NUM_THREADS=$t cargo bench --quiet --bench forward -- --noplot --warm-up-time 1 --measurement-time 10 >/dev/null 2>&1
    for mode in all logits; do
      case $mode in all) name=forward_all_captures ;; logits) name=forward_logits_only ;; esac
      est=target/criterion/smollm2_8x64/$name/new/estimates.json
      ours=$(python3 -c "import json;print(512/(json.load(open('$est'))['median']['point_estimate']/1e9))")
      theirs=$(OMP_NUM_THREADS=$t "$REFENV_PY" scripts/bench_forward_transformers.py --gguf "$model" --threads "$t" --mode $mode 2>/dev/null \
        | python3 -c "import json,sys;print(json.loads(sys.stdin.read().strip().splitlines()[-1])['tokens_per_s'])")
      python3 -c "print('%-8s %-8s %-6s %16.1f %19.1f %7.2f' % ('$t', '$mode', '$round', $ours, $theirs, $ours/$theirs))"
      echo "$t $mode $ours $theirs" >> "$results"
    done
  done
done
python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, mode, ours, theirs = line.split()
    rows[(t, mode)].append(float(ours) / float(theirs))
print("median ratio (tokenlens / transformers, >1 = tokenlens faster):")
for (t, mode), r in sorted(rows.items()):
    print(f"  threads {t} {mode:7s} {statistics.median(r):.2f}  (rounds: {', '.join(f'{x:.2f}' for x in r)})")
PY
rm -f "$results"
