#!/usr/bin/env bash
# The whole workflow vs Ecco (issue 15, BENCHMARKS.md "The whole workflow vs Ecco"): Ecco 0.1.2's
# complete per-prompt workflow (scripts/bench_workflow_ecco.py: generate with activations,
# attention, grad x input and integrated gradients, layer_predictions at every generated
# position, rankings, rankings_watch at every generated position, NMF) against `tokenlens run` of
# pipelines/bench-workflow.yaml, which computes the same analyses, on the 42 quickstart prompts,
# 12 tokens each (EOS ignored), SmolLM2-135M-Instruct, THREADS threads.
#
# Per round, each side runs as its own process under GNU time (peak RSS, wall); the order
# alternates between rounds (odd: tokenlens first). tokenlens runs twice per round: with
# integrated gradients (50 Gauss-Legendre steps, as Ecco/captum) and without (grad x input only);
# with IG_TOLERANCE set, a third time with adaptive integrated gradients at that tolerance
# (`saliency.ig_tolerance`: nested levels of 3, 7, 15, 31 nodes within n_steps 50). Ecco runs once (its time without integrated
# gradients is its total minus its timed IG attribution). With COMPUTE=bf16, one more tokenlens
# run: integrated gradients at 50 steps with `model: {compute: bf16}` (weight products in bf16, on
# AMX where the CPU has it); its agreement with Ecco is measured and reported, not required
# (bf16 rounding changes scores by more than the 2e-3 the f32 variants must meet, and can change
# a greedy token).
# scripts/bench_workflow_report.py then checks that both sides generated the same tokens and
# that their saliency scores agree (it exits 1 otherwise, and so does this script), and prints
# the ratios (computations only, and whole processes), peak RSS, and both sides' IG completeness
# errors per target.
#
# Usage: [ROUNDS=1] [THREADS=2] [IG_TOLERANCE=T] [COMPUTE=bf16] [LIMIT=N] [GENERATE=12] [OUT=DIR] scripts/bench_workflow.sh
#   LIMIT: the first N prompts only; GENERATE: tokens generated per prompt.
# Needs: the reference venv and Ecco (scripts/setup_ecco.sh, run here if needed), GNU time.
# Outputs: OUT (default target/bench-workflow/<UTC time>/: JSON, runs, logs, results.json); the
# tables go to stdout.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-2}
IG_TOLERANCE=${IG_TOLERANCE:-}
COMPUTE=${COMPUTE:-f32}
case $COMPUTE in bf16 | f32) ;; *) echo "error: COMPUTE=$COMPUTE (f32 or bf16)" >&2; exit 1 ;; esac
LIMIT=${LIMIT:-}
GENERATE=${GENERATE:-12}
/usr/bin/time --version 2>&1 | grep -q GNU ||
  { echo "error: GNU time not found at /usr/bin/time (apt-get install time)" >&2; exit 1; }
scripts/setup_ecco.sh >&2
build_release
interop_py=$(interop_venv)

out=${OUT:-target/bench-workflow/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
machine_line "threads $THREADS, $ROUNDS round(s)" | tee "$out/machine.txt"
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|fma|f16c|amx_tile)$' |
  paste -sd' ' | sed 's/^/cpu flags: /' | tee -a "$out/machine.txt"
echo "started $(date -u '+%F %T') UTC; outputs in $out"
echo "ROUNDS=$ROUNDS THREADS=$THREADS IG_TOLERANCE=$IG_TOLERANCE COMPUTE=$COMPUTE LIMIT=$LIMIT GENERATE=$GENERATE scripts/bench_workflow.sh" >"$out/command.txt"

# The tokenlens specs: the committed one, and variants (no IG; adaptive IG) written as JSON
# (YAML's subset) with absolute paths.
variants=(ig noig)
[ -n "$IG_TOLERANCE" ] && variants+=(adaptive)
[ "$COMPUTE" = bf16 ] && variants+=(bf16)
python3 - "$out" "$IG_TOLERANCE" "$LIMIT" "$GENERATE" "$COMPUTE" <<'PY'
import json, os, sys
out, tol, limit, generate, compute = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
root = os.getcwd()
base = {
    "model": "default",
    "dataset": {"path": f"{root}/datasets/quickstart.jsonl", "text_field": "text", "id_field": "id"},
    "generation": {"max_new_tokens": generate, "temperature": 0, "stop_at_eos": False},
    "batching": {"batch_size": 8},
    "analyses": {
        "predictions": {"top_k": 10},
        "saliency": {"methods": ["grad_x_input", "integrated_gradients"], "n_steps": 50,
                     "rule": "gauss_legendre"},
        "lens": {"top_k": 10, "final_norm": True},
        "watch": {"tokens": [" Paris", " Jupiter", " the", " and"], "final_norm": True},
        "activations": {"layers": "all"},
        "attention": {"layers": "all"},
        "nmf": {"n_components": 8, "layers": "all"},
    },
}
if limit:
    base["dataset"]["limit"] = int(limit)
specs = {"ig": base}
noig = json.loads(json.dumps(base))
noig["analyses"]["saliency"]["methods"] = ["grad_x_input"]
specs["noig"] = noig
if tol:
    ad = json.loads(json.dumps(base))
    ad["analyses"]["saliency"]["ig_tolerance"] = float(tol)
    specs["adaptive"] = ad
if compute == "bf16":
    b = json.loads(json.dumps(base))
    b["model"] = {"path": "default", "compute": "bf16"}
    specs["bf16"] = b
for name, spec in specs.items():
    spec["output"] = {"dir": f"{root}/{out}/run-{name}", "overwrite": True}
    with open(f"{out}/spec-{name}.yaml", "w") as fh:
        json.dump(spec, fh, indent=1)
PY
# The committed spec (the same settings as spec-ig, with relative paths) stays valid.
"$TOKENLENS_BIN" validate --no-model pipelines/bench-workflow.yaml >/dev/null

ecco_args=(--threads "$THREADS" --generate "$GENERATE")
[ -n "$LIMIT" ] && ecco_args+=(--limit "$LIMIT")
run_tokenlens() {
  local r=$1 v
  for v in "${variants[@]}"; do
    timed "$out" "r$r.tokenlens-$v" out "$TOKENLENS_BIN" run --quiet "$out/spec-$v.yaml"
    mv "$out/run-$v" "$out/r$r.run-$v"
  done
}
run_ecco() {
  timed "$out" "r$1.ecco" out env PYTHONPATH="$ECCO_PKGS" "$REFENV_PY" scripts/bench_workflow_ecco.py \
    "${ecco_args[@]}" --model-dir "$ECCO_MODEL" --out "$out/r$1.ecco.json"
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_tokenlens "$r"; run_ecco "$r"; else run_ecco "$r"; run_tokenlens "$r"; fi
done
"$interop_py" scripts/bench_workflow_report.py "$out" "$ROUNDS" "${variants[@]}"
