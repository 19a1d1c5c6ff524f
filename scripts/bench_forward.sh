#!/usr/bin/env bash
# Side-by-side forward benchmark: tokenlens (criterion, benches/forward.rs) and transformers
# (scripts/bench_forward_transformers.py) on the same model, token ids and thread count, with all
# captures (`all`: residual stream, MLP activations, attention probabilities, logits) and with the
# logits only (`logits`). transformers runs eager attention for `all` (attention probabilities are
# asked for) and its default, sdpa, for `logits`. The two sides alternate for ROUNDS rounds (odd
# rounds: tokenlens first, even: transformers first; this machine is noisy: compare ratios
# measured back to back) and the script prints every round's tokens/s and ratio, then the median
# ratio. Needs the reference venv ($REFENV_PY; see scripts/lib.sh and scripts/README.md).
#
# Usage: [ROUNDS=3] [OUT=DIR] [MEASURE_S=10] [REPEAT=7] scripts/bench_forward.sh [THREADS...]
#   THREADS default: 1 2. MEASURE_S: criterion's measurement time per case; REPEAT: timed
#   transformers passes after one warm-up (median).
# Outputs: OUT (default target/bench-forward/<UTC time>/): every round's criterion estimates and
#   transformers JSON line, and results.json (figures, ratios, attention implementations, the
#   command); the table goes to stdout.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
ROUNDS=${ROUNDS:-3}
MEASURE_S=${MEASURE_S:-10}
REPEAT=${REPEAT:-7}
out=${OUT:-target/bench-forward/$(date -u +%Y%m%dT%H%M%SZ)}
model=$(fetch_model)
[ -f "$model" ] || { echo "error: model $model missing (scripts/fetch-model.sh)" >&2; exit 1; }
threads=${*:-1 2}
# The bench must measure the real model: never let it skip (it would leave no estimates).
unset TOKENLENS_SKIP_REAL_MODELS
cargo bench --quiet --bench forward --no-run >/dev/null 2>&1 ||
  { echo "error: building benches/forward.rs failed (cargo bench --bench forward --no-run)" >&2; exit 1; }
mkdir -p "$out"
machine_line "" | tee "$out/machine.txt"
printf '%-8s %-8s %-6s %16s %19s %7s\n' threads capture round tokenlens_tok/s transformers_tok/s ratio
crit=target/criterion/smollm2_8x64
run_tokenlens() {  # threads round
  local mode name
  rm -rf "$crit/forward_all_captures/new" "$crit/forward_logits_only/new"
  RAYON_NUM_THREADS=$1 cargo bench --quiet --bench forward -- --noplot --warm-up-time 1 \
    --measurement-time "$MEASURE_S" >"$out/t$1.r$2.criterion.log" 2>&1 ||
    { echo "error: cargo bench --bench forward failed; $out/t$1.r$2.criterion.log ends with:" >&2
      tail -n 20 "$out/t$1.r$2.criterion.log" >&2; exit 1; }
  for mode in all logits; do
    case $mode in all) name=forward_all_captures ;; logits) name=forward_logits_only ;; esac
    [ -f "$crit/$name/new/estimates.json" ] ||
      { echo "error: criterion wrote no $crit/$name/new/estimates.json (see $out/t$1.r$2.criterion.log)" >&2; exit 1; }
    cp "$crit/$name/new/estimates.json" "$out/t$1.r$2.$mode.tokenlens.json"
  done
}
run_transformers() {  # threads round
  local mode
  for mode in all logits; do
    OMP_NUM_THREADS=$1 "$REFENV_PY" scripts/bench_forward_transformers.py --gguf "$model" --threads "$1" \
      --mode $mode --repeat "$REPEAT" >"$out/t$1.r$2.$mode.transformers.json" 2>"$out/t$1.r$2.$mode.transformers.log" ||
      { echo "error: bench_forward_transformers.py failed; $out/t$1.r$2.$mode.transformers.log ends with:" >&2
        tail -n 20 "$out/t$1.r$2.$mode.transformers.log" >&2; exit 1; }
  done
}
for t in $threads; do
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      run_tokenlens "$t" "$round"; run_transformers "$t" "$round"
    else
      run_transformers "$t" "$round"; run_tokenlens "$t" "$round"
    fi
    for mode in all logits; do
      python3 - "$out/t$t.r$round.$mode" "$t" "$mode" "$round" <<'PY'
import json, sys
base, t, mode, rnd = sys.argv[1:5]
ours = 512 / (json.load(open(base + ".tokenlens.json"))["median"]["point_estimate"] / 1e9)
theirs = json.loads(open(base + ".transformers.json").read().strip().splitlines()[-1])["tokens_per_s"]
print("%-8s %-8s %-6s %16.1f %19.1f %7.2f" % (t, mode, rnd, ours, theirs, ours / theirs))
PY
    done
  done
done
# shellcheck disable=SC2086  # the thread counts, one argument each
python3 - "$out" "$ROUNDS" "ROUNDS=$ROUNDS MEASURE_S=$MEASURE_S REPEAT=$REPEAT scripts/bench_forward.sh $threads" $threads <<'PY'
import json, statistics, sys
out, rounds, command, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
res = {"comparison": "forward", "command": command, "rounds": rounds, "batch": 8, "tokens": 64,
       "model": "SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to f32 by both sides",
       "unit": "tokens/s", "ratio": "tokenlens / transformers (>1: tokenlens faster)", "cases": []}
print("median ratio (tokenlens / transformers, >1 = tokenlens faster):")
for t in threads:
    for mode in ("all", "logits"):
        rows = []
        for r in range(1, rounds + 1):
            base = f"{out}/t{t}.r{r}.{mode}"
            ours = 512 / (json.load(open(base + ".tokenlens.json"))["median"]["point_estimate"] / 1e9)
            tf = json.loads(open(base + ".transformers.json").read().strip().splitlines()[-1])
            rows.append({"round": r, "first": "tokenlens" if r % 2 else "transformers",
                         "tokenlens_tok_s": ours, "transformers_tok_s": tf["tokens_per_s"],
                         "ratio": ours / tf["tokens_per_s"],
                         "transformers_attn_implementation": tf.get("attn_implementation"),
                         "transformers_output_attentions": tf.get("output_attentions")})
        ratios = [x["ratio"] for x in rows]
        attn = sorted({x["transformers_attn_implementation"] for x in rows})
        res["cases"].append({"threads": int(t), "capture": mode, "rounds": rows, "ratios": ratios,
                             "median_ratio": statistics.median(ratios),
                             "transformers_attn_implementation": attn[0] if len(attn) == 1 else attn})
        print(f"  threads {t} {mode:7s} {statistics.median(ratios):.2f}  (rounds: {', '.join(f'{x:.2f}' for x in ratios)};"
              f" transformers attention: {', '.join(map(str, attn))})")
        res["versions"] = {"torch": tf.get("torch"), "transformers": tf.get("transformers")}
json.dump(res, open(f"{out}/results.json", "w"), indent=1)
PY
echo "outputs in $out"
