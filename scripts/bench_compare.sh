#!/usr/bin/env bash
# Layer similarity on the 10x corpus (BENCHMARKS.md, "Comparing runs"): `tokenlens compare` of two
# SmolLM2 runs, and of SmolLM2 with Gemma 3, vs Ecco 0.1.2's in-memory CKA, CCA, SVCCA and PWCCA on
# the same rows (scripts/bench_compare_ecco.py): time and peak RSS of each process, and both
# sides' values checked against each other (the run fails when they differ by more than TOL).
#
# Inputs, made first under OUT (each a `tokenlens run` of pipelines/bench-nmf-10x.yaml's 440
# docstring prompts, 12 greedy tokens, with the residual stream of every layer added: f16 for
# SmolLM2, f32 for Gemma 3, whose residuals exceed float16's range):
#   run-f32    the default SmolLM2, with its MLP activations of every layer too (f16)
#   run-bf16   the same model with its weights rounded to bf16, with its activations too
#   run-gemma3 Gemma 3 270M, residuals only (GEMMA=0 skips it and the document case)
# INPUTS=DIR takes them from DIR instead (a previous run's OUT), when all it needs are there.
# Cases, each timed over ROUNDS rounds with the side that runs first alternating:
#   residuals    run-f32 vs run-bf16, position level, the residual stream (31 layers of 576):
#                `tokenlens compare --similarity residuals` (the diff, the minibatch CKA of every
#                layer pair, CKA/CCA/SVCCA/PWCCA of the 31 diagonal pairs) vs Ecco's four metrics
#                on the diagonal pairs, every layer of both runs loaded in memory first.
#   activations  the same runs' MLP activations (30 layers of 1536), CKA only: `tokenlens compare
#                --similarity activations --metrics cka-minibatch,cka` vs Ecco's `cka` (Ecco's
#                CCA family at 1536 neurons takes minutes per pair).
#   document     run-f32 vs run-gemma3 at document level (each row a prompt's mean over its
#                positions: the tokenizers differ), residuals, CKA (440 rows do not exceed the
#                576 neurons the CCA family would need).
# Ecco has no minibatch CKA and no diff: tokenlens' side does more work than Ecco's.
#
# Usage: [ROUNDS=2] [THREADS=2] [LIMIT=N] [CASES="residuals activations document"] [GEMMA=1]
#        [TOL=1e-4] [INPUTS=DIR] [OUT=DIR] scripts/bench_compare.sh
#   LIMIT: only the first N prompts (smoke runs). TOL: the largest |tokenlens - Ecco| accepted.
# Outputs: OUT (default target/bench-compare/<UTC time>/): the input runs, the comparison
#   directories, per round and side the GNU time files and logs, ecco-*.json, check-*.json and
#   results.json (per case: rows, both sides' seconds and peak RSS per round, their ratios, the
#   largest value differences per metric; the machine; the command).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
LIMIT=${LIMIT:-}
GEMMA=${GEMMA:-1}
CASES=${CASES:-residuals activations document}
[ "$GEMMA" = 1 ] || CASES=${CASES//document/}
INPUTS=${INPUTS:-}
TOL=${TOL:-1e-4}
out=${OUT:-target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)}
need_refenv
refenv_pkgs pyarrow:pyarrow
[ -f "$ECCO_PKGS/ecco/analysis.py" ] || { echo "error: Ecco not found in $ECCO_PKGS: run scripts/setup_ecco.sh" >&2; exit 1; }
fetch_model >/dev/null
[ "$GEMMA" = 1 ] && scripts/fetch-model.sh gemma3 >/dev/null
build_release
mkdir -p "$out"
out=$(cd "$out" && pwd)

# ---- the input runs --------------------------------------------------------------------------
make_run() {  # make_run NAME MODEL_JSON WITH_ACTIVATIONS RESIDUALS_DTYPE
  local name=$1 model=$2 acts=$3 dtype=$4
  python3 - "$out/spec-$name.json" "$out/$name" "$model" "$acts" "$dtype" "$LIMIT" <<'PY'
import json, os, re, sys
spec_out, run, model, acts, dtype, limit = sys.argv[1:7]
text = open("pipelines/bench-nmf-10x.yaml").read()
path = re.search(r"^\s*path:\s*(\S+)", text, re.M).group(1)
analyses = {"residuals": {"layers": "all", "dtype": dtype}}
if acts == "1":
    analyses["activations"] = {"layers": "all", "dtype": "f16"}
spec = {"model": json.loads(model),
        "dataset": {"path": os.path.normpath(os.path.join(os.getcwd(), "pipelines", path)), "id_field": "id"},
        "generation": {"max_new_tokens": int(re.search(r"max_new_tokens:\s*(\d+)", text).group(1))},
        "analyses": analyses, "output": {"dir": run, "overwrite": True}}
if limit:
    spec["dataset"]["limit"] = int(limit)
json.dump(spec, open(spec_out, "w"), indent=1)
PY
  echo "input $name: tokenlens run $out/spec-$name.json ..." >&2
  RAYON_NUM_THREADS=$THREADS "$TOKENLENS_BIN" run --quiet "$out/spec-$name.json" >&2
}
if [ -n "$INPUTS" ]; then
  for name in run-f32 run-bf16 $([ "$GEMMA" = 1 ] && echo run-gemma3); do
    [ -f "$INPUTS/$name/manifest.json" ] || { echo "error: INPUTS: $INPUTS/$name is not a run" >&2; exit 1; }
    ln -sfn "$(cd "$INPUTS/$name" && pwd)" "$out/$name"
  done
else
  make_run run-f32 '"default"' 1 f16
  make_run run-bf16 '{"path": "default", "dtype": "bf16"}' 1 f16
  # Gemma 3's residual stream exceeds float16's range (65504) at some positions: f32.
  [ "$GEMMA" = 1 ] && make_run run-gemma3 '"fetched:gemma3"' 0 f32
fi

machine_line "threads $THREADS, $ROUNDS round(s)" | tee "$out/machine.txt"

# ---- the cases -------------------------------------------------------------------------------
# case_ NAME RUN_B LEVEL SOURCE OUR_METRICS ECCO_METRICS: ROUNDS rounds of both sides, alternating
# which goes first; then the values checked.
case_() {
  local name=$1 b=$2 level=$3 source=$4 metrics=$5 ecco_metrics=$6 r
  local ours=(compare --quiet --overwrite "$out/run-f32" "$out/$b" --level "$level" --similarity "$source"
    --metrics "$metrics" --out "$out/cmp-$name")
  echo "== $name: run-f32 vs $b, $level level, $source" >&2
  for r in $(seq 1 "$ROUNDS"); do
    local sides=(tokenlens ecco)
    [ $((r % 2)) = 0 ] && sides=(ecco tokenlens)
    for side in "${sides[@]}"; do
      if [ "$side" = tokenlens ]; then
        timed "$out" "$name-tokenlens-$r" out "$TOKENLENS_BIN" "${ours[@]}"
      else
        timed "$out" "$name-ecco-$r" out env PYTHONPATH="$ECCO_PKGS" "$REFENV_PY" scripts/bench_compare_ecco.py \
          run "$out/run-f32" "$out/$b" --level "$level" --sources "$source" --metrics "$ecco_metrics" \
          --out "$out/ecco-$name-$r.json"
      fi
    done
  done
  "$REFENV_PY" scripts/bench_compare_ecco.py check "$out/ecco-$name-1.json" "$out/cmp-$name" --tol "$TOL" \
    --out "$out/check-$name.json"
}
cases=()
for c in $CASES; do
  case $c in
    residuals) case_ residuals run-bf16 position residuals cka-minibatch,cka,cca,svcca,pwcca cka,cca,svcca,pwcca ;;
    activations) case_ activations run-bf16 position activations cka-minibatch,cka cka ;;
    document) case_ document run-gemma3 document residuals cka-minibatch,cka cka ;;
    *) echo "error: CASES: unknown case '$c' (residuals activations document)" >&2; exit 2 ;;
  esac
  cases+=("$c")
done

cmd="ROUNDS=$ROUNDS THREADS=$THREADS LIMIT=$LIMIT CASES='$CASES' GEMMA=$GEMMA TOL=$TOL INPUTS=$INPUTS scripts/bench_compare.sh"
python3 - "$out" "$ROUNDS" "$cmd" "${cases[@]}" <<'PY'
import json, statistics, sys
out, rounds, command, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
res = {"comparison": "compare", "command": command, "machine": open(f"{out}/machine.txt").read().strip(), "cases": {}}
def timefile(name):
    kb, wall = open(f"{out}/{name}.time").read().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mb": int(kb) / 1024, "load1_before": float(open(f"{out}/{name}.load").read())}
for case in cases:
    cmp = json.load(open(f"{out}/cmp-{case}/comparison.json"))
    rec = {"rounds": [], "check": json.load(open(f"{out}/check-{case}.json")),
           "tokenlens_compared": cmp.get("compared"), "tokenlens_skipped": cmp.get("skipped")}
    for r in range(1, rounds + 1):
        t, e = timefile(f"{case}-tokenlens-{r}"), timefile(f"{case}-ecco-{r}")
        ej = json.load(open(f"{out}/ecco-{case}-{r}.json"))
        e.update(load_s=ej["load_s"], compute_s=ej["compute_s"],
                 per_metric_s={f"{s}/{m}": v for s, x in ej["sources"].items() for m, v in x["seconds"].items()})
        rec["rows"] = {s: x["rows"] for s, x in ej["sources"].items()}
        rec["rounds"].append({"round": r, "first": "tokenlens" if r % 2 else "ecco", "tokenlens": t, "ecco": e,
                              "ratio_wall": e["wall_s"] / t["wall_s"], "ratio_rss": e["peak_rss_mb"] / t["peak_rss_mb"]})
    rec["median_ratio_wall"] = statistics.median(x["ratio_wall"] for x in rec["rounds"])
    rec["median_ratio_rss"] = statistics.median(x["ratio_rss"] for x in rec["rounds"])
    res["cases"][case] = rec
    worst = ", ".join(f"{k} {w['max_abs_diff']:.1e}" for k, w in rec["check"]["worst"].items())
    print(f"{case}: rows {rec['rows']}; Ecco / tokenlens wall {rec['median_ratio_wall']:.2f}x, "
          f"peak RSS {rec['median_ratio_rss']:.2f}x; max |diff| {worst}")
json.dump(res, open(f"{out}/results.json", "w"), indent=1)
PY
