#!/usr/bin/env bash
# Corpus NMF vs scikit-learn (BENCHMARKS.md, "Corpus NMF vs scikit-learn"): makes the input runs
# (the activations of every layer, f16, of the quickstart prompts: 1,073 positions; and of
# pipelines/bench-nmf-10x.yaml: 11,502 positions) and runs scripts/bench_nmf.py on each: tokenlens
# nmf vs scikit-learn's NMF(solver="cd") and MiniBatchNMF from the same start, errors by one
# float64 formula, an equal-work run, in-memory and streamed, the fit's own memory (see
# bench_nmf.py's docstring). Installs scikit-learn and pyarrow into the reference venv if missing.
#
# Usage: [ROUNDS=3] [THREADS=2] [SCALES="1x 10x"] [LIMIT=N] [MAX_ITER=200] [K=10] [OUT=DIR]
#        [NMF_RUNS="RUN_DIR..."] scripts/bench_nmf.sh
#   ROUNDS: seeds 0..ROUNDS-1, one round each (the side that runs first alternates).
#   LIMIT: only the first N prompts of the 1x corpus (smoke runs).
#   NMF_RUNS: factorize these existing runs (each needs an activations table) instead of making
#   the inputs; bench_nmf.py writes its NMF tables into them.
# Outputs: OUT (default target/bench-nmf/<UTC time>/): the input runs, one JSON per input
#   (bench_nmf.py --out) and results.json (all of them, the command).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
SCALES=${SCALES:-1x 10x}
LIMIT=${LIMIT:-}
MAX_ITER=${MAX_ITER:-200}
K=${K:-10}
NMF_RUNS=${NMF_RUNS:-}
out=${OUT:-target/bench-nmf/$(date -u +%Y%m%dT%H%M%SZ)}
inputs=()
for run in $NMF_RUNS; do  # checked first: a missing input fails at once
  [ -d "$run/activations" ] ||
    { echo "error: NMF_RUNS: $run has no activations table ($run/activations/ missing)" >&2; exit 1; }
  inputs+=("$run")
done
refenv_pkgs sklearn:scikit-learn pyarrow:pyarrow
build_release
mkdir -p "$out"
seeds=$(seq -s, 0 $((ROUNDS - 1)))

if [ -z "$NMF_RUNS" ]; then
  fetch_model >/dev/null
  for scale in $SCALES; do
    run=$out/input-$scale
    python3 - "$scale" "$run" "$out/spec-$scale.json" "$LIMIT" <<'PY'
import json, os, re, sys
scale, run, spec_out, limit = sys.argv[1:5]
root = os.getcwd()
if scale == "1x":  # the quickstart's prompts and generation, activations only (as its run has them)
    spec = {"model": "default",
            "dataset": {"path": f"{root}/datasets/quickstart.jsonl", "text_field": "text", "id_field": "id"},
            "generation": {"max_new_tokens": 12, "temperature": 0, "seed": 0, "stop_at_eos": True},
            "batching": {"batch_size": 8},
            "analyses": {"activations": {"layers": "all", "dtype": "f16", "positions": "all"}}}
elif scale == "10x":  # pipelines/bench-nmf-10x.yaml with its paths made absolute
    text = open("pipelines/bench-nmf-10x.yaml").read()
    path = re.search(r"^\s*path:\s*(\S+)", text, re.M).group(1)
    spec = {"model": "default",
            "dataset": {"path": os.path.normpath(os.path.join(root, "pipelines", path)), "id_field": "id"},
            "generation": {"max_new_tokens": int(re.search(r"max_new_tokens:\s*(\d+)", text).group(1))},
            "analyses": {"activations": {"layers": "all", "dtype": "f16"}}}
else:
    sys.exit(f"error: SCALES: unknown scale {scale} (1x, 10x)")
if limit:
    spec["dataset"]["limit"] = int(limit)
spec["output"] = {"dir": os.path.join(root, run), "overwrite": True}
json.dump(spec, open(spec_out, "w"), indent=1)
PY
    echo "nmf input $scale: tokenlens run $out/spec-$scale.json ..." >&2
    RAYON_NUM_THREADS=$THREADS "$TOKENLENS_BIN" run --quiet "$out/spec-$scale.json" >&2
    inputs+=("$run")
  done
fi

machine_line "threads $THREADS, $ROUNDS round(s)" | tee "$out/machine.txt"
labels=()
for run in "${inputs[@]}"; do
  label=$(basename "$run")
  labels+=("$label")
  echo "== $run" >&2
  "$REFENV_PY" scripts/bench_nmf.py "$run" --k "$K" --max-iter "$MAX_ITER" --seeds "$seeds" --threads "$THREADS" \
    --also-streamed --tokenlens "$TOKENLENS_BIN" --out "$out/$label.json" >/dev/null
done
cmd="ROUNDS=$ROUNDS THREADS=$THREADS SCALES='$SCALES' LIMIT=$LIMIT MAX_ITER=$MAX_ITER K=$K"
[ -n "$NMF_RUNS" ] && cmd+=" NMF_RUNS='$NMF_RUNS'"
python3 - "$out" "$cmd scripts/bench_nmf.sh" "${labels[@]}" <<'PY'
import json, sys
out, command, labels = sys.argv[1], sys.argv[2], sys.argv[3:]
res = {"comparison": "nmf", "command": command, "inputs": {}}
for label in labels:
    res["inputs"][label] = json.load(open(f"{out}/{label}.json"))
for label, r in res["inputs"].items():
    s = r.get("summary", {})
    ew = s.get("equal_work", {})
    print(f"{label}: {r['rows']} x {r['cols']}, k {r['k']}, {s.get('seeds')} seed(s), same start: {s.get('same_start')}; "
          f"time to scikit-learn's error (within 0.1%): median {s.get('median_time_ratio_within_0.1pct')}; "
          f"final error ratio {s.get('median_final_error_ratio')}; equal work: solve ratio {ew.get('median_solve_ratio')}, "
          f"error ratio {ew.get('median_final_error_ratio')}; peak RSS / scikit-learn's fit footprint "
          f"{s.get('median_peak_rss_ratio')}")
json.dump(res, open(f"{out}/results.json", "w"), indent=1)
PY
