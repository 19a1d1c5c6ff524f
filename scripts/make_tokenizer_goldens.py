"""Tokenizer goldens: tiny GGUF files carrying each tokenizer type tokenlens rebuilds from GGUF
metadata, and the ids transformers' own GGUF tokenizer loading gives for a fixed text set.

Run with the reference venv (scripts/README.md):

    ~/.cache/tokenlens/refenv/bin/python scripts/make_tokenizer_goldens.py [GEMMA3_GGUF]

Writes tests/data/tokenizers/<name>.gguf and tests/data/tokenizers/goldens.json. Nothing is random:
the tokenizers are trained (single-threaded) on the corpus below, the text set is fixed. With the
path of the real Gemma 3 270M GGUF (scripts/fetch-model.sh gemma3) it also records
tests/data/tokenizers/gemma3-270m.json: transformers' ids on the same texts for that file's
262k-token vocabulary (the GGUF itself is not committed).

The tiny tokenizers:
  spm-llama   SentencePiece BPE with byte fallback, `tokenizer.ggml.model = llama`,
              general.architecture = llama (transformers' LlamaTokenizer: Metaspace, prefix space)
  spm-phi3    the same vocabulary as architecture phi3 (transformers prepends the prefix space
              with a normalizer: a text starting with spaces keeps one more ▁)
  spm-gemma   the same kind of vocabulary as Gemma spells it (architecture gemma3: no prefix space,
              space-run tokens stored as real spaces, newline runs user-defined, <pad>/<eos>/<bos>/
              <unk> first, no merges in the file)
  bpe-<pre>   byte-level BPE (`tokenizer.ggml.model = gpt2`) for `tokenizer.ggml.pre` = llama-bpe,
              qwen2, gpt-2 and smollm, each trained with that pre-tokenizer's split.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' trainer: one thread, same result

import gguf  # noqa: E402
import sentencepiece as spm  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests/data/tokenizers"

# The text set the Rust tests encode: unicode (accents, decomposed accents, CJK, Korean), long
# numbers, whitespace runs (double spaces, tabs, newlines, leading/trailing), code, emoji,
# contractions, markup, special-token spellings.
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé — Ångström, façade, Zürich; crème brûlée à la carte.",
    "Decomposed: Cafe\u0301 and n\u0303 (NFD), ligature ﬁ, full-width ＡＢＣ１２３.",
    "日本語のテキストと中文字符，还有한국어 문장입니다。",
    "Numbers: 1234567890 3.14159 2024-01-15 1,000,000 and 42; 0x1F, 1e-9, 99999999999999.",
    "double  spaces   triple    and\ttabs\t\tand\nnewlines\n\n\nend",
    "  leading spaces and trailing   ",
    "def foo(x):\n    return x**2 + 1  # comment\n\nfor i in range(10):\n\tprint(f\"{i:>3}\")\n",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
    "Emoji: 🙂😀👍🏽 🇫🇷 ❤️ and 🚀🚀 ✨",
    "It's what they're saying: I'd've, we'll, you've, DON'T, She'S",
    "<b>tags</b> &amp; {\"json\": [1, 2, 3]} \\n \r\n windows line\r\nend",
    "HELLO World hELLo wOrLd",
    "a",
    " ",
    "\n",
    "  hi  there",
    "table:\n    1    22\n        333   4",
    "tab\tafter\t \t mixed \n \n",
    "special <s> </s> <bos> <eos> <|endoftext|> <|begin_of_text|> in text",
]

# The training corpus of the tiny tokenizers (also English/code heavy, with a little of the rest).
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.",
    "Hello world, hello there, hello again. The world is wide and the sea is deep.",
    "Interpretability tools show how language models turn tokens into predictions.",
    "Saliency, the logit lens and attention maps are views of the same forward pass.",
    "It's a test: they're here, we'll see, I'd say you've done it, don't worry.",
    "Numbers such as 12, 345, 6789, 2024 and 3.14 appear in many documents.",
    "Café, naïve, résumé, façade and Zürich are words with accents.",
    "日本語 中文 한국어 are written in other scripts.",
    "def main():\n    for i in range(10):\n        print(i, i * i)\n    return 0\n",
    "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}\n",
    "if (a && b) { return a + b; } else { return a - b; }",
    "<html><body><p>text</p></body></html>",
    "    indented    with    spaces\tand\ttabs\n\n\nand blank lines\n",
    "Models predict the next token; the lens projects each layer to the vocabulary.",
    "Attention heads attend to earlier positions in the sequence of tokens.",
    "A residual stream carries information from layer to layer through the network.",
    "The results are written to Parquet tables and read by the viewer in the browser.",
    "Emoji like 🙂 and 🚀 are rare in this corpus.",
]


def corpus_file(tmp: Path) -> Path:
    path = tmp / "corpus.txt"
    path.write_text("\n".join(CORPUS * 3) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# SentencePiece


def train_spm(tmp: Path, name: str, **options) -> spm.SentencePieceProcessor:
    prefix = tmp / name
    spm.SentencePieceTrainer.train(
        input=str(corpus_file(tmp)),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=520,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
        **options,
    )
    return spm.SentencePieceProcessor(model_file=str(prefix) + ".model")


def spm_vocab(sp: spm.SentencePieceProcessor):
    """tokens, scores, token types as llama.cpp's converter writes them."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def write_gguf(path: Path, arch: str, model_keys: dict, tok: dict) -> None:
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in model_keys.items():
        getattr(w, f"add_{key}")(value)
    w.add_tokenizer_model(tok["model"])
    if "pre" in tok:
        w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    if "scores" in tok:
        w.add_token_scores(tok["scores"])
    w.add_token_types([int(t) for t in tok["types"]])
    if "merges" in tok:
        w.add_token_merges(tok["merges"])
    for key in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        if key in tok:
            getattr(w, f"add_{key}")(tok[key])
    for key in ("add_bos_token", "add_eos_token", "add_space_prefix"):
        if key in tok:
            getattr(w, f"add_{key}")(tok[key])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


LLAMA_KEYS = dict(
    context_length=128, embedding_length=16, block_count=1, feed_forward_length=32,
    head_count=2, head_count_kv=2, layer_norm_rms_eps=1e-5, rope_freq_base=10000.0,
)
GEMMA3_KEYS = dict(
    context_length=128, embedding_length=16, block_count=1, feed_forward_length=32,
    head_count=2, head_count_kv=1, layer_norm_rms_eps=1e-6, rope_freq_base=1e6,
    key_length=8, value_length=8, sliding_window=16,
)


def make_spm_llama(tmp: Path) -> None:
    sp = train_spm(tmp, "spm-llama", add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    tokens, scores, types = spm_vocab(sp)
    write_gguf(OUT / "spm-llama.gguf", "llama", LLAMA_KEYS, dict(
        model="llama", pre="default", tokens=tokens, scores=scores, types=types,
        bos_token_id=1, eos_token_id=2, unk_token_id=0,
        add_bos_token=True, add_eos_token=False, add_space_prefix=True,
    ))


def make_spm_phi3(tmp: Path) -> None:
    # Phi-3's SentencePiece vocabulary is Llama's; transformers prepends its prefix differently.
    sp = train_spm(tmp, "spm-phi3", add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    tokens, scores, types = spm_vocab(sp)
    write_gguf(OUT / "spm-phi3.gguf", "phi3", dict(LLAMA_KEYS, rope_dimension_count=8), dict(
        model="llama", pre="default", tokens=tokens, scores=scores, types=types,
        bos_token_id=1, eos_token_id=2, unk_token_id=0,
        add_bos_token=True, add_eos_token=False, add_space_prefix=True,
    ))


def make_spm_gemma(tmp: Path) -> None:
    # Gemma's layout: <pad> <eos> <bos> <unk> first, newline runs user-defined, no dummy prefix.
    newlines = ["\n", "\n\n", "\n\n\n"]
    sp = train_spm(
        tmp, "spm-gemma", add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=["<mask>"], user_defined_symbols=newlines, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
    )
    tokens, scores, types = spm_vocab(sp)
    for i, t in enumerate(tokens):
        if t in newlines:
            types[i] = gguf.TokenType.USER_DEFINED
    # Gemma stores its space-run tokens as real spaces, user-defined, score 0 (llama.cpp's
    # converter keeps the tokenizer.model's spelling); a tab run too.
    for t in ["  ", "    ", "\t\t"]:
        tokens.append(t)
        scores.append(0.0)
        types.append(gguf.TokenType.USER_DEFINED)
    # a control token past the learned vocabulary, as Gemma's <start_of_turn>
    tokens.append("<start_of_turn>")
    scores.append(0.0)
    types.append(gguf.TokenType.CONTROL)
    write_gguf(OUT / "spm-gemma.gguf", "gemma3", GEMMA3_KEYS, dict(
        model="llama", pre="default", tokens=tokens, scores=scores, types=types,
        bos_token_id=2, eos_token_id=1, unk_token_id=3, pad_token_id=0,
        add_bos_token=True, add_eos_token=False, add_space_prefix=False,
    ))


# ---------------------------------------------------------------------------------------------
# Byte-level BPE

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def split_then_bytes(regex: str):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


# name -> (tokenizer.ggml.pre, general.architecture, pre-tokenizer trained with, specials, bos)
BPE_KINDS = {
    "bpe-llama-bpe": ("llama-bpe", "llama", lambda: split_then_bytes(LLAMA3_SPLIT),
                      ["<|begin_of_text|>", "<|end_of_text|>"], True),
    "bpe-qwen2": ("qwen2", "qwen2", lambda: split_then_bytes(QWEN2_SPLIT),
                  ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False),
    "bpe-gpt-2": ("gpt-2", "gpt2", lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
                  ["<|endoftext|>"], False),
    # SmolLM's tokenizer.json: every digit split, then the GPT-2 byte-level regex
    "bpe-smollm": ("smollm", "llama", lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)]),
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False),
}

GPT2_KEYS = dict(context_length=128, embedding_length=16, block_count=1, feed_forward_length=32,
                 head_count=2, layer_norm_eps=1e-5)


def make_bpe(tmp: Path, name: str):
    pre, arch, pre_tok, specials, add_bos = BPE_KINDS[name]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tok()
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train([str(corpus_file(tmp))], trainer)
    spec = json.loads(tk.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    keys = GPT2_KEYS if arch == "gpt2" else LLAMA_KEYS
    tok = dict(model="gpt2", pre=pre, tokens=tokens, types=types, merges=merges,
               bos_token_id=0, eos_token_id=len(specials) - 1,
               add_bos_token=add_bos)
    write_gguf(OUT / f"{name}.gguf", arch, keys, tok)
    # The model's own tokenizer.json (what llama.cpp's pre-tokenizer reproduces), for comparison.
    return tk


def hf_ids(path: Path):
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return [tok(t).input_ids for t in TEXTS], tok


# Where transformers' GGUF loading is not the model's tokenizer, the expected ids are the trained
# tokenizer's own (its tokenizer.json, which llama.cpp's pre-tokenizer reproduces), on the texts
# the reason covers; any other difference stops this script.
KNOWN_DIFFERENCES = {
    "smollm": ("transformers' GGUF loader has no `smollm` pre-tokenizer and keeps GPT-2's split "
               "(a whitespace run before a digit gives its last space to the digit); SmolLM's "
               "tokenizer.json and llama.cpp split every digit off first",
               lambda text: any(c.isdigit() for c in text)),
    "extra-special": ("transformers adds GPT2Tokenizer's default `<|endoftext|>` as a special token "
                      "outside the vocabulary (id = vocabulary size)",
                      lambda text: "<|endoftext|>" in text),
}


def compact(value) -> str:
    """JSON with one line per id list."""
    text = json.dumps(value, ensure_ascii=False, indent=1)
    out, depth_buf = [], None
    for line in text.split("\n"):
        stripped = line.strip()
        if depth_buf is not None:
            depth_buf.append(stripped)
            if stripped.startswith("]"):
                out.append("".join(depth_buf).replace(",", ", "))
                depth_buf = None
            continue
        if stripped.endswith("[") and not stripped.startswith('"texts"'):
            depth_buf = [line.rstrip()]
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    goldens = {"texts": TEXTS, "tokenizers": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_spm_llama(tmp)
        make_spm_phi3(tmp)
        make_spm_gemma(tmp)
        trained = {name: make_bpe(tmp, name) for name in BPE_KINDS}
    for name in ["spm-llama", "spm-phi3", "spm-gemma", *BPE_KINDS]:
        ids, tok = hf_ids(OUT / f"{name}.gguf")
        entry = {"gguf": f"{name}.gguf", "transformers_class": type(tok).__name__, "ids": ids}
        if name in trained:
            bos = [0] if BPE_KINDS[name][4] else []
            own = [bos + trained[name].encode(t).ids for t in TEXTS]
            differs = {}
            for k, (a, b) in enumerate(zip(ids, own)):
                if a == b:
                    continue
                why = [key for key, (_, applies) in KNOWN_DIFFERENCES.items()
                       if applies(TEXTS[k]) and (key != "smollm" or name == "bpe-smollm")]
                if not why:
                    sys.exit(f"{name}: text {k} {TEXTS[k]!r}: transformers {a} != tokenizer.json {b}")
                differs[str(k)] = {"transformers": a, "reason": KNOWN_DIFFERENCES[why[0]][0]}
                ids[k] = b
            entry["transformers_differs"] = differs
        goldens["tokenizers"][name] = entry
        n_diff = len(entry.get("transformers_differs", {}))
        print(f"{name}: {type(tok).__name__}, {sum(map(len, ids))} ids, "
              f"{n_diff} texts where the expected ids are tokenizer.json's", file=sys.stderr)
    (OUT / "goldens.json").write_text(compact(goldens))
    if len(sys.argv) > 1:
        real = Path(sys.argv[1])
        ids, tok = hf_ids(real)
        (OUT / "gemma3-270m.json").write_text(compact({
            "gguf": real.name, "transformers_class": type(tok).__name__, "texts": TEXTS, "ids": ids,
        }))
        print(f"{real.name}: {sum(map(len, ids))} ids", file=sys.stderr)


if __name__ == "__main__":
    main()
