#!/usr/bin/env bash
# Every side-by-side comparison of BENCHMARKS.md in one go, into one results file.
#
# Usage: [ROUNDS=N] [THREADS=2] [QUICK=1] scripts/bench.sh [forward saliency nmf memory viewer 1b workflow compare gemm quickstart]
#   (default: all ten, in that order)
#
#   forward   batched forward, all captures and logits only: tokenlens vs transformers (bench_forward.sh)
#   saliency  grad x input and integrated gradients: tokenlens vs Ecco 0.1.2, scores checked (bench_saliency.sh)
#   nmf       corpus NMF: tokenlens vs scikit-learn, 1x and 10x corpora (bench_nmf.sh -> bench_nmf.py)
#   memory    pipeline memory at 1x and 10x the dataset (bench_memory.sh -> bench_pipeline.sh)
#   viewer    viewer cold start on a 10,000-prompt run, headless Chromium (bench_viewer.sh)
#   1b        1B-class models: forward, saliency, memory vs transformers (bench_1b.sh; DTYPE=bf16|f32)
#   workflow  Ecco's whole per-prompt workflow vs `tokenlens run` (bench_workflow.sh; LIMIT=N prompts)
#   compare   layer similarity of two 10x-corpus runs: `tokenlens compare` vs Ecco in memory (bench_compare.sh)
#   gemm      the f32 gemm rate on SmolLM2's shapes: the gemm crate vs torch f32 and bf16 (bench_gemm.sh)
#   quickstart  the quickstart pipeline's time with f32 and with bf16 products (bench_quickstart.sh)
#
# First it makes what is missing, all under the user's cache ($TOKENLENS_CACHE, default
# ~/.cache/tokenlens) or target/: the reference venv ($TOKENLENS_REFENV: torch, transformers;
# scikit-learn and pyarrow for nmf), Ecco's pinned stack and model (scripts/setup_ecco.sh; saliency,
# workflow), target/interop-venv (workflow's report), the viewer's npm packages (viewer); then it
# fetches the model and builds the release binary. Each comparison then runs its own script, which
# alternates the two sides between rounds and writes its figures as JSON into its own directory
# of this run; a comparison that fails (a missing model or input among the causes: each script
# exits non-zero naming it) is recorded as failed with its log's end, and no figures are taken
# for it. The others still run; the script exits 1 if any failed.
#
# Env: ROUNDS (every comparison's rounds; default: each script's own: forward 3, saliency 3, nmf 3
#      seeds, viewer 3 passes, 1b 2, workflow 1, compare 2, gemm 3, quickstart 1), THREADS (default 2; forward measures 1 and 2
#      unless FORWARD_THREADS is set), QUICK=1 (a smoke run with tiny sizes: checks the plumbing,
#      its figures mean nothing), WORKFLOW_LIMIT (the workflow's first N prompts; default 14, as
#      BENCHMARKS.md's figures; 0: all 42), VIEWER_PROMPTS (default 10000), and the scripts' own
#      variables whose names are theirs alone: DTYPE, TASKS (1b), COMPUTE (1b, workflow), IG_TOLERANCE (workflow), SAMPLE
#      (memory), NMF_RUNS (nmf: factorize these runs instead of making the inputs), CASES, GEMMA,
#      TOL, INPUTS (compare). The generic ones (LIMIT, GENERATE, PROMPTS, ...) are cleared, so that one
#      meant for one script cannot change another's work.
# Writes target/bench/<UTC time>/: results.json (per comparison: status, command, seconds, figures
#   and ratios as the script wrote them; the machine: CPU model, cores, flags, RAM; the date and
#   commit), results.md (the tables), and one directory per comparison (its outputs and logs).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
all=(forward saliency nmf memory viewer 1b workflow compare gemm quickstart)
if [ $# -gt 0 ]; then selected=("$@"); else selected=("${all[@]}"); fi
for name in "${selected[@]}"; do
  case " ${all[*]} " in *" $name "*) ;; *) echo "error: unknown comparison '$name' (${all[*]})" >&2; exit 2 ;; esac
done
has() { case " ${selected[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
QUICK=${QUICK:-}
THREADS=${THREADS:-2}
export THREADS
WORKFLOW_LIMIT=${WORKFLOW_LIMIT:-14}
[ "$WORKFLOW_LIMIT" = 0 ] && WORKFLOW_LIMIT=
unset LIMIT GENERATE PROMPTS PROMPT_LEN BATCH TOKENS REPS N_STEPS CHUNK_TOKENS SCALES MAX_ITER K OUT WORK \
  MEASURE_S REPEAT GENERATOR ROWS
out=target/bench/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
started=$(date -u +%FT%TZ)
echo "bench: ${selected[*]}${QUICK:+ (QUICK=1: smoke run, figures meaningless)}; outputs in $out"

# ---- environments, model, binary -----------------------------------------------------------
for name in forward saliency nmf 1b workflow compare gemm; do
  if has "$name"; then ensure_refenv; break; fi
done
if has saliency || has workflow || has compare; then scripts/setup_ecco.sh 2>&1 | tail -n 1; fi
if has nmf; then refenv_pkgs sklearn:scikit-learn pyarrow:pyarrow; fi
if has compare; then refenv_pkgs pyarrow:pyarrow; fi
if has workflow; then interop_venv >/dev/null; fi
fetch_model >/dev/null
echo "building the release binary ..."
build_release

# ---- the comparisons -------------------------------------------------------------------------
# run_comparison NAME [VAR=VALUE...] SCRIPT [ARGS...]: runs it with OUT/WORK set to $out/NAME,
# stdout to the terminal and NAME/stdout.log, stderr to NAME/stderr.log; NAME/status.json.
failed=()
run_comparison() {
  local name=$1 dir=$out/$1 t0=$SECONDS rc
  shift
  mkdir -p "$dir"
  echo
  echo "== $name: $* (started $(date -u +%T) UTC)"
  set +e
  env OUT="$dir" WORK="$dir" "$@" 2>"$dir/stderr.log" | tee "$dir/stdout.log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    failed+=("$name")
    echo "-- $name FAILED (exit $rc); $dir/stderr.log ends with:"
    tail -n 15 "$dir/stderr.log" | sed 's/^/   /'
  fi
  # The command as run: the variables that passed through from the environment, then the line.
  local var passed=""
  for var in THREADS DTYPE COMPUTE TASKS IG_TOLERANCE SAMPLE NMF_RUNS CASES GEMMA TOL INPUTS; do
    [ -n "${!var:-}" ] && passed+="$var='${!var}' "
  done
  python3 - "$dir/status.json" "$name" "$rc" "$((SECONDS - t0))" "$passed$*" <<'PY'
import json, sys
path, name, rc, seconds, command = sys.argv[1:6]
json.dump({"name": name, "exit_code": int(rc), "seconds": int(seconds), "command": command}, open(path, "w"), indent=1)
PY
}

q() { [ -n "$QUICK" ]; }
r() { [ -n "${ROUNDS:-}" ] && echo "ROUNDS=$ROUNDS" || echo "ROUNDS=$1"; }  # the user's ROUNDS, else the default given
for name in "${selected[@]}"; do
  case $name in
    forward)
      if q; then
        run_comparison forward "$(r 1)" MEASURE_S=2 REPEAT=2 scripts/bench_forward.sh "${FORWARD_THREADS:-$THREADS}"
      else
        # shellcheck disable=SC2086  # a list of thread counts
        run_comparison forward "$(r 3)" scripts/bench_forward.sh ${FORWARD_THREADS:-1 2}
      fi ;;
    saliency)
      if q; then
        run_comparison saliency "$(r 1)" PROMPTS=2 GENERATE=2 scripts/bench_saliency.sh "$THREADS"
      else
        run_comparison saliency "$(r 3)" scripts/bench_saliency.sh "$THREADS"
      fi ;;
    nmf)
      if q; then
        run_comparison nmf "$(r 1)" SCALES=1x LIMIT=3 MAX_ITER=10 scripts/bench_nmf.sh
      else
        run_comparison nmf "$(r 3)" scripts/bench_nmf.sh
      fi ;;
    memory)
      if q; then
        run_comparison memory LIMIT=2 scripts/bench_memory.sh 1
      else
        run_comparison memory scripts/bench_memory.sh 1 10
      fi ;;
    viewer)
      if q; then
        run_comparison viewer "$(r 1)" scripts/bench_viewer.sh 300
      else
        run_comparison viewer "$(r 3)" scripts/bench_viewer.sh "${VIEWER_PROMPTS:-10000}"
      fi ;;
    1b)
      if q; then
        run_comparison 1b "$(r 1)" BATCH=1 TOKENS=16 REPS=1 PROMPTS=1 PROMPT_LEN=8 GENERATE=2 N_STEPS=4 \
          scripts/bench_1b.sh qwen2-0.5b
      else
        run_comparison 1b "$(r 2)" scripts/bench_1b.sh
      fi ;;
    workflow)
      if q; then
        run_comparison workflow "$(r 1)" LIMIT=2 GENERATE=3 scripts/bench_workflow.sh
      else
        run_comparison workflow "$(r 1)" LIMIT="$WORKFLOW_LIMIT" scripts/bench_workflow.sh
      fi ;;
    compare)
      if q; then
        run_comparison compare "$(r 1)" LIMIT=12 scripts/bench_compare.sh
      else
        run_comparison compare "$(r 2)" scripts/bench_compare.sh
      fi ;;
    gemm)
      if q; then
        run_comparison gemm "$(r 1)" ROWS=256 scripts/bench_gemm.sh "$THREADS"
      else
        run_comparison gemm "$(r 3)" scripts/bench_gemm.sh "$THREADS"
      fi ;;
    quickstart)
      if q; then
        run_comparison quickstart "$(r 1)" LIMIT=2 scripts/bench_quickstart.sh
      else
        run_comparison quickstart "$(r 1)" scripts/bench_quickstart.sh
      fi ;;
  esac
done

python3 scripts/bench_report.py "$out" "$started" "${QUICK:+quick}" "${selected[@]}"
echo
echo "results: $out/results.json, $out/results.md"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (see results.json and each one's stderr.log)" >&2
  exit 1
fi
