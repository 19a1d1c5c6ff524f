#!/usr/bin/env bash
# Set up Ecco 0.1.2 (the tool tokenlens reimplements) next to the reference venv, for the
# by-hand comparison benchmark scripts/bench_saliency_ecco.py. Never run by CI.
#
# What it makes (both outside the repo, in the user's cache by default; see scripts/lib.sh;
# idempotent: a finished step is skipped, a half-done one is redone from scratch):
#   1. $ECCO_PKGS (default ~/.cache/tokenlens/ecco-pkgs, ~490 MB): a `pip install --target` dir with Ecco
#      0.1.2 and the old stack it needs, all pinned and installed with --no-deps:
#        ecco 0.1.2, transformers 4.40.2, tokenizers 0.19.1, huggingface-hub 0.23.5,
#        captum 0.9.0, matplotlib 3.8.4, seaborn 0.13.2, pandas 2.3.3, scikit-learn 1.7.2,
#        scipy 1.15.3, joblib 1.4.2, ipython 8.25.0 and ipython's pure-Python deps, and
#        matplotlib's (pillow, pyparsing, cycler, kiwisolver, fonttools, dateutil, six, contourpy:
#        the reference venv does not have them).
#      torch, numpy, safetensors, PyYAML, requests, regex, tqdm, ... come from the
#      reference venv ($TOKENLENS_REFENV, see scripts/README.md), which must exist first.
#      Use it as:  PYTHONPATH=$ECCO_PKGS $REFENV_PY ...
#   2. $ECCO_MODEL (default ~/.cache/tokenlens/ecco-model, ~515 MB): SmolLM2-135M-Instruct as an f32
#      Hugging Face checkpoint that transformers 4.40.2 can load.
#
# Caveats:
# - Ecco 0.1.2's generate works unpatched only with transformers 4.31-4.40; the venv has
#   transformers 5.x, which other scripts need, so the old stack lives in its own dir.
# - matplotlib >= 3.9 breaks `import ecco` (hence 3.8.4, shadowing the venv's copy).
# - joblib >= 1.5 no longer vendors cloudpickle (sklearn import fails without it): 1.4.2.
# - transformers 4.40.2 cannot load GGUF (that came in 4.41), so step 2 loads the GGUF with
#   the venv's transformers 5.x (dequantized to f32, exactly the weights the goldens use),
#   and writes model.safetensors (lm_head is tied to embed_tokens, not stored) plus a
#   config.json in 4.x form (top-level rope_theta = 100000; 4.x ignores 5.x's
#   "rope_parameters" and would silently use 10000). transformers 5.x's tokenizer.json
#   stores BPE merges as pairs, which tokenizers 0.19 cannot parse: they are rewritten as
#   "a b" strings, and tokenizer_config.json names PreTrainedTokenizerFast.
# - Step 3 checks the 4.40.2 load against the 5.x GGUF load: same prompt ids, same greedy
#   tokens, logits within 1e-3. It uses one thread and takes ~10 s.
#
# Usage: scripts/setup_ecco.sh
#   (env: ECCO_PKGS, ECCO_MODEL, TOKENLENS_REFENV or REFENV_PY, TOKENLENS_GGUF; see scripts/lib.sh)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
need_refenv

PKGS=(
  ecco==0.1.2 transformers==4.40.2 tokenizers==0.19.1 huggingface-hub==0.23.5 captum==0.9.0
  matplotlib==3.8.4 seaborn==0.13.2 pandas==2.3.3 pytz==2026.6
  scikit-learn==1.7.2 scipy==1.15.3 joblib==1.4.2 threadpoolctl==3.8.0
  ipython==8.25.0 decorator==5.3.1 jedi==0.20.1 parso==0.8.7 matplotlib-inline==0.2.2
  traitlets==5.16.1 prompt_toolkit==3.0.53 wcwidth==0.9.4 pexpect==4.9.0 ptyprocess==0.7.0
  stack_data==0.6.3 executing==2.3.0 asttokens==3.0.2 pure_eval==0.2.4
  pillow==13.0.0 pyparsing==3.3.3 cycler==0.12.1 kiwisolver==1.5.1 fonttools==4.68.0
  python-dateutil==4.0.0 six==1.17.0 contourpy==1.3.3
)
STACK_STAMP="v1 ${PKGS[*]}"
MODEL_STAMP_NAME=.tokenlens-ecco-model

# ---- 1. the Ecco package stack -------------------------------------------------------------
stack_ok() {
  [ -f "$ECCO_PKGS/.tokenlens-ecco-stack" ] &&
    [ "$(cat "$ECCO_PKGS/.tokenlens-ecco-stack")" = "$STACK_STAMP" ] &&
    PYTHONPATH="$ECCO_PKGS" "$REFENV_PY" -c 'import ecco, transformers; assert transformers.__version__ == "4.40.2"' 2>/dev/null
}
if stack_ok; then
  echo "ecco stack: $ECCO_PKGS is up to date" >&2
else
  echo "ecco stack: installing into $ECCO_PKGS ..." >&2
  rm -rf "$ECCO_PKGS.tmp"
  "$REFENV_PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$ECCO_PKGS.tmp" "${PKGS[@]}"
  echo "$STACK_STAMP" > "$ECCO_PKGS.tmp/.tokenlens-ecco-stack"
  rm -rf "$ECCO_PKGS"
  mv "$ECCO_PKGS.tmp" "$ECCO_PKGS"
  stack_ok || { echo "error: 'import ecco' fails with PYTHONPATH=$ECCO_PKGS" >&2; exit 1; }
fi

# ---- 2. the model as a transformers-4.x checkpoint -----------------------------------------
GGUF=${TOKENLENS_GGUF:-$(fetch_model)}
GGUF_SHA=$(sha256sum "$GGUF" | cut -d' ' -f1)
MODEL_STAMP="v1 $GGUF_SHA"
if [ -f "$ECCO_MODEL/$MODEL_STAMP_NAME" ] && [ "$(cat "$ECCO_MODEL/$MODEL_STAMP_NAME")" = "$MODEL_STAMP" ]; then
  echo "ecco model: $ECCO_MODEL is up to date" >&2
else
  echo "ecco model: converting $GGUF -> $ECCO_MODEL (transformers from the venv) ..." >&2
  rm -rf "$ECCO_MODEL.tmp"
  PYTHONPATH='' "$REFENV_PY" - "$GGUF" "$ECCO_MODEL.tmp" <<'PY'
import json, os, sys
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(1)
gguf, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
d, f = os.path.split(gguf)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()

# weights: everything but the tied lm_head
sd = model.state_dict()
assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
assert model.config.tie_word_embeddings
save_file({k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"},
          os.path.join(out, "model.safetensors"), metadata={"format": "pt"})

# config in transformers-4.x form
cfg = model.config.to_dict()
cfg.pop("quantization_config", None)
rp = cfg.pop("rope_parameters", None) or {}
assert rp.get("rope_type", "default") == "default", rp
cfg["rope_theta"] = rp.get("rope_theta", getattr(model.config, "rope_theta", None))
assert cfg["rope_theta"], "no rope_theta in the GGUF config"
cfg["rope_scaling"] = None
cfg.pop("dtype", None)
cfg["torch_dtype"] = "float32"
cfg["architectures"] = ["LlamaForCausalLM"]
cfg["_name_or_path"] = "SmolLM2-135M-Instruct (from " + f + ")"
cfg["converted_by"] = "tokenlens scripts/setup_ecco.sh with transformers " + transformers.__version__
with open(os.path.join(out, "config.json"), "w") as fh:
    json.dump(cfg, fh, indent=2, sort_keys=True)
gc = model.generation_config
with open(os.path.join(out, "generation_config.json"), "w") as fh:
    json.dump({"bos_token_id": gc.bos_token_id, "eos_token_id": gc.eos_token_id,
               "pad_token_id": gc.pad_token_id}, fh, indent=2)

# tokenizer: tokenizer.json with merges as "a b" strings (tokenizers < 0.20 cannot read pairs)
tok.save_pretrained(out)
tj_path = os.path.join(out, "tokenizer.json")
tj = json.load(open(tj_path, encoding="utf-8"))
merges = tj["model"]["merges"]
if merges and isinstance(merges[0], list):
    assert all(" " not in a and " " not in b for a, b in merges)
    tj["model"]["merges"] = [a + " " + b for a, b in merges]
with open(tj_path, "w", encoding="utf-8") as fh:
    json.dump(tj, fh, ensure_ascii=False)
tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192,
      "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
    v = getattr(tok, k, None)
    if v is not None:
        tc[k] = str(v)
if getattr(tok, "chat_template", None):
    tc["chat_template"] = tok.chat_template
with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
    json.dump(tc, fh, indent=2)

# reference values for step 3
prompt = "The capital of France is Paris, and the capital of Italy is"
ids = tok(prompt)["input_ids"]
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    seq = list(ids)
    for _ in range(5):
        seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
with open(os.path.join(out, "conversion_check.json"), "w") as fh:
    json.dump({"prompt": prompt, "input_ids": ids, "greedy_ids": seq[len(ids):],
               "last_logits_first64": logits[:64].tolist(),
               "last_logits_argmax": int(logits.argmax()), "last_logits_max": float(logits.max()),
               "transformers": transformers.__version__, "torch": torch.__version__}, fh)
print("converted:", out, file=sys.stderr)
PY
  rm -rf "$ECCO_MODEL"
  mv "$ECCO_MODEL.tmp" "$ECCO_MODEL"
  echo "$MODEL_STAMP" > "$ECCO_MODEL/$MODEL_STAMP_NAME"
fi

# ---- 3. check: Ecco + transformers 4.40.2 load the copy and agree with the GGUF load --------
PYTHONPATH="$ECCO_PKGS" "$REFENV_PY" - "$ECCO_MODEL" <<'PY'
import json, os, sys, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import ecco, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
d = sys.argv[1]
ref = json.load(open(os.path.join(d, "conversion_check.json")))
tok = AutoTokenizer.from_pretrained(d)
ids = tok(ref["prompt"])["input_ids"]
assert ids == ref["input_ids"], (ids, ref["input_ids"])
model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
assert model.config.rope_theta == 100000.0, model.config.rope_theta
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    seq = list(ids)
    for _ in range(5):
        seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
diff = (logits[:64] - torch.tensor(ref["last_logits_first64"])).abs().max().item()
assert seq[len(ids):] == ref["greedy_ids"], (seq[len(ids):], ref["greedy_ids"])
assert int(logits.argmax()) == ref["last_logits_argmax"]
assert diff < 1e-3, diff
print(f"ecco {ecco.__version__} + transformers {transformers.__version__} (torch {torch.__version__}): "
      f"model at {d} matches the GGUF load (max |dlogit| {diff:.2e} over 64 logits, "
      f"greedy {seq[len(ids):]})", file=sys.stderr)
PY
echo "ok. run with: PYTHONPATH=$ECCO_PKGS $REFENV_PY scripts/bench_saliency_ecco.py --model-dir $ECCO_MODEL" >&2
