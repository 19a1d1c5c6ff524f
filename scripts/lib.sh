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
#                     default model (models/; the binary looks there too) and where the
#                     developer-only tools below live by default.
#   TOKENLENS_REFENV  the Python reference venv (torch, transformers, ...; scripts/README.md
#                     says how to make it): default $TOKENLENS_CACHE/refenv.
#   REFENV_PY         its python: default $TOKENLENS_REFENV/bin/python.
#   ECCO_PKGS         the Ecco 0.1.2 package dir made by setup_ecco.sh: default
#                     $TOKENLENS_CACHE/ecco-pkgs.
#   ECCO_MODEL        the f32 Hugging Face copy of the default model made by setup_ecco.sh:
#                     default $TOKENLENS_CACHE/ecco-model.
#   TOKENLENS_BIN     the release binary build_release makes: target/release/tokenlens.
#
# Functions: fetch_model (prints the default model's path, fetching it once), build_release,
# need_refenv (fails with a pointer to scripts/README.md when the venv is missing),
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

# The release binary, $TOKENLENS_BIN.
build_release() {
  cargo build --release --quiet
}

need_refenv() {
  [ -x "$REFENV_PY" ] || {
    echo "error: reference venv python $REFENV_PY not found (see scripts/README.md)" >&2
    exit 1
  }
}

# machine: <cores> cores, <cpu model>; [WHAT; ]<date>   (WHAT: "" for none)
machine_line() {
  local extra=""
  [ -n "$1" ] && extra="$1; "
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $extra$(date -u +%F)"
}
