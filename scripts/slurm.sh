#!/usr/bin/env bash
# Sharded runs under a real Slurm on this one machine (issue 14, item 5). Installs Slurm's
# single-node packages if missing (Debian: slurm-wlm, munge; as root or through sudo), writes a
# one-node slurm.conf (this machine's CPUs and memory) and a munge key under target/slurm, starts
# munged, slurmctld and slurmd directly (no systemd) and waits for the node to be idle. Then, with
# pipelines/slurm-tiny.yaml (tiny-llama, every analysis):
#
#   1. the unsharded run, directly (the reference);
#   2. `sbatch --array=0-3 scripts/slurm/shard.sbatch` (tokenlens run --resume --shards 4) and
#      `sbatch --dependency=afterok:<array> scripts/slurm/corpus.sbatch` (tokenlens nmf, tokenlens neurons): the union
#      of the shards' tables must equal the unsharded run (scripts/slurm/compare.py rows);
#   3. the same array again into a new run directory, one task scancel'ed while it runs: its shard
#      must not look complete (status file, manifest, no NMF: the dependent job never starts), and
#      `sbatch --array=I scripts/slurm/shard.sbatch` (--resume) plus the corpus job again must end
#      with the files of run 2, byte for byte (compare.py killed / files).
#
# Prints one line per check and a summary; exits 1 if any check failed. The daemons are stopped on
# exit. Everything is written under target/slurm (slurm.conf, state, logs, munge key and socket,
# the runs); the Python checks use target/interop-venv (pyarrow; made as scripts/test.sh makes it).
# Ports: SLURMCTLD_PORT (default 6817), SLURMD_PORT (6818).
#
#   scripts/slurm.sh
#
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

start=$SECONDS
S=$PWD/target/slurm
SHARDS=4
spec_src=pipelines/slurm-tiny.yaml
failed=0
pids=()
ok=ok

say() { printf '%s\n' "$*"; }
check() { # check OK|FAIL TEXT
  if [ "$1" = ok ]; then say "ok   $2"; else say "FAIL $2"; failed=$((failed + 1)); fi
}
die() { say "error: $*" >&2; exit 1; }

# docs/pipelines.md shows the sbatch files verbatim.
if python3 -c 'import sys; d = open(sys.argv[1]).read(); sys.exit(not all(open(f).read() in d for f in sys.argv[2:]))' \
  docs/pipelines.md scripts/slurm/shard.sbatch scripts/slurm/corpus.sbatch; then ok=ok; else ok=FAIL; fi
check "$ok" "docs/pipelines.md shows scripts/slurm/shard.sbatch and corpus.sbatch verbatim"

rm -rf "$S"
mkdir -p "$S"/{etc,state,spool,log,munge/key}

# --- Slurm and munge installed ---------------------------------------------------------------
t_install=$SECONDS
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
  ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge ..."
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  { "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } \
    >"$S/log/install.log" 2>&1 || die "apt-get install slurm-wlm munge failed (see $S/log/install.log)"
fi
install_s=$((SECONDS - t_install))
say "slurm: $(slurmctld -V) (install step: ${install_s} s)"

# --- binary and Python --------------------------------------------------------------------------
[ -x "$TOKENLENS_BIN" ] || build_release
export TOKENLENS=$PWD/$TOKENLENS_BIN
venv=target/interop-venv
if ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check polars pandas pyarrow duckdb
fi
py=$PWD/$venv/bin/python

# --- daemons ------------------------------------------------------------------------------------
stop_daemons() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_daemons EXIT

chmod 755 "$S/munge"
chmod 700 "$S/munge/key"

# munge: a key of our own, its socket under target/slurm (slurm.conf's AuthInfo points there).
# --force: munged refuses to run as root without it.
dd if=/dev/urandom of="$S/munge/key/munge.key" bs=1024 count=1 status=none
chmod 400 "$S/munge/key/munge.key"
sock=$S/munge/munge.socket
munged --foreground --force --socket="$sock" --key-file="$S/munge/key/munge.key" \
  --pid-file="$S/munge/munged.pid" --seed-file="$S/munge/key/munged.seed" \
  >"$S/log/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
munge --socket="$sock" -n | unmunge --socket="$sock" >/dev/null || die "munge does not work (see $S/log/munged.log)"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
user=$(id -un)
export SLURM_CONF=$S/etc/slurm.conf
# No cgroups (containers rarely let slurmd use them): processes tracked by /proc, tasks bound to
# their CPUs with sched_setaffinity, no accounting. CPUs and memory are consumable resources.
cat >"$SLURM_CONF" <<EOF
ClusterName=tokenlens
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -c -f "$SLURM_CONF" >"$S/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$S/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 60); do
  [ "$(sinfo -h -n "$host" -o %t 2>/dev/null)" = idle ] && break
  sleep 1
done
[ "$(sinfo -h -n "$host" -o %t 2>/dev/null)" = idle ] ||
  die "node $host not idle after 60 s: $(sinfo -h -o '%t %E' 2>&1) (logs in $S/log)"
say "slurm up: node $host idle, $cpus CPUs, ${mem_mb} MB ($((SECONDS - start - install_s)) s)"

# --- helpers ------------------------------------------------------------------------------------
# task_state JOB ID: one array task's state (JOB_ID: "123_2"), or a job's.
task_state() {
  scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1 | cut -d= -f2
}
# ended ID: every task of the job is in a final state, or pending on a dependency that can no
# longer be met (DependencyNeverSatisfied); false while any is pending, running or completing,
# or when scontrol does not answer.
ended() {
  local out
  out=$(scontrol -o show job "$1" 2>/dev/null) && [ -n "$out" ] || return 1
  ! grep -v 'JobState=PENDING Reason=DependencyNeverSatisfied' <<<"$out" |
    grep -Ev 'JobState=(COMPLETED|CANCELLED|FAILED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE) ' |
    grep -q .
}
# wait_jobs ID...: until every job has ended (10 min at most).
wait_jobs() {
  local id left
  for _ in $(seq 600); do
    left=0
    for id in "$@"; do ended "$id" || left=1; done
    [ "$left" = 0 ] && return 0
    sleep 1
  done
  die "jobs $* still not finished after 10 min"
}
# all_completed ID: every task of the job COMPLETED with exit code 0.
all_completed() {
  ! scontrol -o show job "$1" | grep -v 'JobState=COMPLETED .*ExitCode=0:0' | grep -q .
}
# spec_for CASE: a copy of the spec in target/slurm/CASE/, relative paths kept valid, output `out`.
spec_for() {
  mkdir -p "$S/$1"
  sed -e 's#^model: \.\./#model: ../../../#' -e 's#^  path: \.\./#  path: ../../../#' \
    -e 's#^  dir: .*#  dir: out#' "$spec_src" >"$S/$1/spec.yaml"
  echo "$S/$1/spec.yaml"
}
# submit_run CASE [ARRAY]: the shard array, then the corpus job depending on it; sets $array, $nmf.
submit_run() {
  local case=$1 range=${2:-0-$((SHARDS - 1))}
  array=$(sbatch --parsable --array="$range" --output="$S/$case/shard-%A_%a.log" \
    scripts/slurm/shard.sbatch "$S/$case/spec.yaml")
  nmf=$(sbatch --parsable --dependency=afterok:"$array" --output="$S/$case/nmf-%j.log" \
    scripts/slurm/corpus.sbatch "$S/$case/out")
}

# --- 1. the unsharded run -----------------------------------------------------------------------
t0=$SECONDS
spec_for whole >/dev/null
(cd "$S/whole" && "$TOKENLENS" run --quiet spec.yaml >run.log)
say "unsharded run: $((SECONDS - t0)) s"

# --- 2. the sharded run under Slurm -------------------------------------------------------------
t0=$SECONDS
spec_for sharded >/dev/null
submit_run sharded
say "submitted: array job $array (shards 0-$((SHARDS - 1))), corpus job $nmf (afterok:$array)"
wait_jobs "$array" "$nmf"
sharded_s=$((SECONDS - t0))
all_completed "$array" && ok=ok || ok=FAIL
check "$ok" "array job $array: every task COMPLETED, exit 0 ($(scontrol -o show job "$array" | grep -o 'JobState=[A-Z]*' | sort | uniq -c | xargs))"
[ "$(task_state "$nmf")" = COMPLETED ] && ok=ok || ok=FAIL
check "$ok" "corpus job $nmf ran after the array: $(task_state "$nmf")"
grep -q '^  "status": "done"' "$S/sharded/out/manifest.json" && ok=ok || ok=FAIL
check "$ok" "sharded run's manifest status is done"
say "sharded run under Slurm: ${sharded_s} s (array + NMF, submit to end)"
say "-- the union of the shards' tables vs the unsharded run:"
if "$py" scripts/slurm/compare.py rows "$S/whole/out" "$S/sharded/out" >"$S/rows.txt"; then ok=ok; else ok=FAIL; fi
sed 's/^/   /' "$S/rows.txt"
check "$ok" "sharded tables (4 shards + corpus job) equal the unsharded run's"

# --- 3. a task killed mid-run, resubmitted with --resume ----------------------------------------
victim=2
spec_for killed >/dev/null
submit_run killed
say "submitted: array job $array, corpus job $nmf (afterok:$array); shard $victim will be cancelled"
status=$S/killed/out/shards/shard-$(printf %03d $victim)-of-$(printf %03d $SHARDS).json
killed_at=""
for _ in $(seq 1200); do
  # Kill once the task has recorded a window as done, before it finishes: preferably while it
  # writes the next one (a hidden .part-00I-*.tmp file exists), else at its third window.
  if [ -f "$status" ] && grep -q '"status": "running"' "$status"; then
    windows=$(grep -o '"windows_done": [0-9]*' "$status" | grep -o '[0-9]*$')
    if [ "$windows" -ge 1 ] && { [ "$windows" -ge 3 ] ||
      compgen -G "$S/killed/out/*/.part-$(printf %03d $victim)-*" >/dev/null; }; then
      scancel "${array}_$victim"
      killed_at=$windows
      break
    fi
  fi
  [ "$(task_state "${array}_$victim")" = COMPLETED ] && break
  sleep 0.05
done
[ -n "$killed_at" ] || die "shard $victim finished before it could be cancelled (make the spec slower)"
say "scancel ${array}_$victim after $killed_at windows recorded done"
wait_jobs "$array" "${array}_$victim"
vstate=$(task_state "${array}_$victim")
[ "$vstate" = CANCELLED ] && ok=ok || ok=FAIL
check "$ok" "task ${array}_$victim ended $vstate"
# The controller re-evaluates the dependency on its own schedule (seconds): until then the
# reason is `Dependency`.
for _ in $(seq 60); do
  nstate=$(scontrol -o show job "$nmf" | grep -o 'JobState=[A-Z_]* Reason=[A-Za-z_]*')
  [ "$nstate" = "JobState=PENDING Reason=Dependency" ] || break
  sleep 1
done
case $nstate in *PENDING*DependencyNeverSatisfied*) ok=ok ;; *) ok=FAIL ;; esac
check "$ok" "corpus job $nmf never started: $nstate"
scancel "$nmf"
say "-- what the cancelled task left:"
if "$py" scripts/slurm/compare.py killed "$S/killed/out" "$victim" >"$S/killed.txt"; then ok=ok; else ok=FAIL; fi
sed 's/^/   /' "$S/killed.txt"
check "$ok" "nothing of the cancelled shard is taken as complete"
# tokenlens nmf's own guard in corpus.sbatch refuses the incomplete run too.
if TOKENLENS=$TOKENLENS bash scripts/slurm/corpus.sbatch "$S/killed/out" 2>"$S/killed/nmf-refused.txt"; then ok=FAIL; else ok=ok; fi
check "$ok" "corpus.sbatch run by hand refuses it: $(cat "$S/killed/nmf-refused.txt")"

t0=$SECONDS
submit_run killed "$victim"
say "resubmitted: array job $array (shard $victim, --resume), corpus job $nmf (afterok:$array)"
wait_jobs "$array" "$nmf"
resume_s=$((SECONDS - t0))
all_completed "$array" && [ "$(task_state "$nmf")" = COMPLETED ] && ok=ok || ok=FAIL
check "$ok" "resumed task and corpus job COMPLETED (${resume_s} s)"
say "-- the resumed run vs the uninterrupted sharded run, file by file:"
if "$py" scripts/slurm/compare.py files "$S/sharded/out" "$S/killed/out" >"$S/files.txt"; then ok=ok; else ok=FAIL; fi
sed 's/^/   /' "$S/files.txt"
check "$ok" "killed + resumed run ends with the uninterrupted run's files, byte for byte"

total=$((SECONDS - start))
say ""
say "summary: $failed failed check(s); ${total} s in all, ${install_s} s of it installing, $((total - install_s)) s without"
[ "$failed" = 0 ]
