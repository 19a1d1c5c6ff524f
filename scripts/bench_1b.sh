#!/usr/bin/env bash
# 1B-class benchmark (issue 14): tokenlens vs transformers on random-weight checkpoints of
# Llama-3.2-1B's and Qwen2.5-0.5B's shapes (scripts/make_bench_models.py, bf16 safetensors, made
# once in $TOKENLENS_CACHE/bench-models), in the same dtype and thread count:
#   forward               B x T tokens, one forward pass with every capture   -> tokens/s
#   grad_x_input          S prompts of P tokens, G greedy tokens each          -> s per generated token
#   integrated_gradients  the same, N Gauss-Legendre steps, zero baseline      -> s per generated token
# Every (model, task, side) is its own process under GNU time (peak RSS per task). Per round and
# model, each task runs both sides back to back, tokenlens first in odd rounds and transformers
# first in even ones; transformers runs eager attention for the forward (it returns the
# attention probabilities) and its default, sdpa, for saliency. Ratios are taken within a
# round (this machine drifts) and their median over ROUNDS is printed, with each side's peak RSS
# and tokenlens' memory target: 1.3 x the weights' bytes in DTYPE + the working set (BENCHMARKS.md,
# "1B-class models", says how both are computed).
#
# Usage: [DTYPE=bf16] [ROUNDS=2] [THREADS=2] scripts/bench_1b.sh [MODEL...]
#   MODEL: llama-1b, qwen2-0.5b (default: both)
#   DTYPE: bf16 (default; needs tokenlens' --dtype, issue 14) or f32
#   COMPUTE: tokenlens' --compute, f32 (default: exact products) or bf16 (operands rounded to bf16,
#            as torch's bf16 matmul; on AMX where the CPU has it); transformers is unchanged
#   TASKS="forward grad_x_input integrated_gradients" (default: all three)
#   sizes: BATCH=4 TOKENS=64 REPS=3 (forward); PROMPTS=2 PROMPT_LEN=16 GENERATE=8 N_STEPS=16
#          CHUNK_TOKENS=2048 (saliency; tokenlens' default chunk)
# Outputs (every JSON line and log, results.json with every figure): OUT (default
# target/bench-1b/<UTC time>/); the table goes to stdout.
# Needs the reference venv ($REFENV_PY; scripts/README.md) and GNU time (apt-get install time).
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv
DTYPE=${DTYPE:-bf16}
COMPUTE=${COMPUTE:-f32}
case $COMPUTE in bf16 | f32) ;; *) echo "error: COMPUTE=$COMPUTE (f32 or bf16)" >&2; exit 1 ;; esac
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
TASKS=${TASKS:-forward grad_x_input integrated_gradients}
BATCH=${BATCH:-4} TOKENS=${TOKENS:-64} REPS=${REPS:-3}
PROMPTS=${PROMPTS:-2} PROMPT_LEN=${PROMPT_LEN:-16} GENERATE=${GENERATE:-8} N_STEPS=${N_STEPS:-16}
CHUNK_TOKENS=${CHUNK_TOKENS:-2048}
if [ $# -gt 0 ]; then models=("$@"); else models=(llama-1b qwen2-0.5b); fi
case $DTYPE in bf16 | f32) ;; *) echo "error: DTYPE=$DTYPE (bf16 or f32)" >&2; exit 1 ;; esac
/usr/bin/time --version 2>&1 | grep -q GNU ||
  { echo "error: GNU time not found at /usr/bin/time (apt-get install time)" >&2; exit 1; }

started=$(date +%s)
build_release
cargo build --release --quiet --example bench_forward
forward_bin=target/release/examples/bench_forward
# tokenlens' dtype flag: passed when the binary has it; without it only f32 can be measured.
dtype_args=()
if "$TOKENLENS_BIN" saliency --help | grep -q -- '--dtype'; then
  dtype_args=(--dtype "$DTYPE" --compute "$COMPUTE")
elif [ "$DTYPE" != f32 ]; then
  echo "error: $TOKENLENS_BIN has no --dtype option (dtype support, issue 14, not merged yet):" \
    "it holds every model in f32. Run with DTYPE=f32, or build a tokenlens that has --dtype." >&2
  exit 1
fi
"$REFENV_PY" scripts/make_bench_models.py --only "$(IFS=,; echo "${models[*]}")" >&2
prepared=$(date +%s)

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > 0.5 * n) }'; then
  echo "warning: load average $load on $(nproc) cores before starting: other processes are running, and" \
    "torch's OpenMP threads likely lose more than tokenlens' on a shared machine (the ratios may overstate" \
    "tokenlens' lead). The report prints the load before every process." >&2
fi
out=${OUT:-target/bench-1b/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
machine_line "threads $THREADS, dtype $DTYPE, $ROUNDS round(s)"
echo "started $(date -u '+%F %T') UTC; outputs in $out"
echo "forward: $BATCH x $TOKENS tokens, all captures, median of $REPS passes after a warm-up;" \
  "saliency: $PROMPTS prompts x $PROMPT_LEN tokens + $GENERATE generated, $N_STEPS IG steps, chunk $CHUNK_TOKENS"

# The saliency prompts as text: prompt r is "t<id> t<id> ..." with the forward ids' formula (the
# WordLevel tokenizer maps "t<id>" to <id>; scripts/make_bench_models.py).
mapfile -t prompts < <(python3 -c "
for r in range($PROMPTS):
    print(' '.join(f't{1000 + (r * 104729 + i * 7919) % 48000}' for i in range($PROMPT_LEN)))")

run_tokenlens() {  # round model dir task
  local base="$out/r$1.$2.$4"
  case $4 in
    forward)
      timed "$out" "r$1.$2.$4.tokenlens" json env TOKENLENS_BENCH_MODEL="$3" TOKENLENS_BENCH_DTYPE="$DTYPE" TOKENLENS_BENCH_COMPUTE="$COMPUTE" \
        TOKENLENS_BENCH_BATCH="$BATCH" TOKENLENS_BENCH_TOKENS="$TOKENS" TOKENLENS_BENCH_REPS="$REPS" \
        "$forward_bin"
      ;;
    grad_x_input | integrated_gradients)
      timed "$out" "r$1.$2.$4.tokenlens" json "$TOKENLENS_BIN" saliency -m "$3" "${dtype_args[@]}" \
        --generate "$GENERATE" --ignore-eos --method "$4" --n-steps "$N_STEPS" \
        --chunk-tokens "$CHUNK_TOKENS" --json "$base.tokenlens.out.json" "${prompts[@]}"
      ;;
    *) echo "error: unknown task $4" >&2; exit 1 ;;
  esac
}
run_transformers() {  # round model dir task
  timed "$out" "r$1.$2.$4.transformers" json "$REFENV_PY" scripts/bench_1b_transformers.py --model "$3" \
    --task "$4" --dtype "$DTYPE" --threads "$THREADS" --batch "$BATCH" --tokens "$TOKENS" \
    --reps "$REPS" --prompts "$PROMPTS" --prompt-len "$PROMPT_LEN" --generate "$GENERATE" --n-steps "$N_STEPS"
}

for round in $(seq 1 "$ROUNDS"); do
  for m in "${models[@]}"; do
    dir=$TOKENLENS_CACHE/bench-models/$m
    for task in $TASKS; do
      if [ $((round % 2)) = 1 ]; then
        run_tokenlens "$round" "$m" "$dir" "$task"; run_transformers "$round" "$m" "$dir" "$task"
      else
        run_transformers "$round" "$m" "$dir" "$task"; run_tokenlens "$round" "$m" "$dir" "$task"
      fi
    done
  done
done

cmd="DTYPE=$DTYPE COMPUTE=$COMPUTE ROUNDS=$ROUNDS THREADS=$THREADS TASKS='$TASKS' BATCH=$BATCH TOKENS=$TOKENS REPS=$REPS PROMPTS=$PROMPTS"
cmd+=" PROMPT_LEN=$PROMPT_LEN GENERATE=$GENERATE N_STEPS=$N_STEPS CHUNK_TOKENS=$CHUNK_TOKENS scripts/bench_1b.sh ${models[*]}"
python3 scripts/bench_1b_report.py "$out" "$TOKENLENS_CACHE/bench-models" "$DTYPE" "$CHUNK_TOKENS" "$cmd"
now=$(date +%s)
echo "wall: $((now - started)) s in all ($((prepared - started)) s build and checkpoints, $((now - prepared)) s measuring)"
