#!/usr/bin/env python3
"""The tables of scripts/bench_1b.sh, from the files it wrote (standard library only).

  python3 scripts/bench_1b_report.py OUT_DIR BENCH_MODELS_DIR DTYPE CHUNK_TOKENS [COMMAND]

Writes OUT_DIR/results.json with every figure of the tables (COMMAND: the command line recorded
there); exits 1 when OUT_DIR holds no complete (tokenlens, transformers) pair.

OUT_DIR holds, per round r, model m, task t and side s: r{r}.{m}.{t}.{s}.json (stdout),
.time ("peak_kb wall_s" from GNU time), .log, and for tokenlens' saliency .out.json (--json).

Memory target (issue 14): tokenlens' peak RSS <= 1.3 x the weights' bytes in DTYPE + the working
set, where the working set is
  forward:  the captures returned (f32: residual (L+1) x B x T x d, MLP L x B x T x ffn, attention
            L x B x H x T x T, logits B x T x V; the bytes the binary reports) plus one layer's
            activations of the batch (B x T x (q|k|v + gate|up + 2 d) f32);
  saliency: chunk_tokens x the larger of the reverse pass's bytes per forward token
            (per layer: block input, q|k|v, residual before the MLP, the MLP Jacobian 2 ffn, the
            block output: 4 L (3 d + qkv + 2 ffn), plus attention probabilities 4 L H len) and per
            prefix row (g, the scratch dh / da / dqkv, the MLP backward's d-, ffn- and 2 ffn-wide
            buffers: 4 (5 d + H hd + qkv + 3 ffn)), since a chunk holds at most chunk_tokens of
            them together (src/analysis/saliency.rs, src/model/reverse/).
"""
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

out, models_dir, dtype, chunk = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
command = sys.argv[5] if len(sys.argv) > 5 else None
results = {"comparison": "1b", "command": command, "dtype": dtype, "chunk_tokens": chunk,
           "ratio": "forward: tokenlens tok/s / transformers tok/s; saliency: transformers s/token / "
                    "tokenlens s/token (>1: tokenlens faster)", "cases": []}
BYTES = {"bf16": 2, "f16": 2, "f32": 4}
GB = 1e9


def load_json(path):
    lines = [l for l in path.read_text().splitlines() if l.strip().startswith("{")]
    return json.loads(lines[-1])


def peak_kb(path):
    kb, wall = path.read_text().split()[-2:]
    return int(kb), float(wall)


def model_dims(m):
    c = json.loads((models_dir / m / "config.json").read_text())
    info = json.loads((models_dir / m / "bench-model.json").read_text())
    d, h, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or d // h
    return {"d": d, "h": h, "hd": hd, "qkv": (h + 2 * kv) * hd, "ffn": c["intermediate_size"],
            "L": c["num_hidden_layers"], "V": c["vocab_size"], "params": info["parameters"]}


def saliency_rates(k, length):
    """Bytes of the reverse pass per forward token of a segment of `length` tokens, and per
    prefix row (src/model/reverse/: forward.rs's Tape, backward.rs's Scratch and MLP buffers)."""
    d, L, ffn, qkv, h = k["d"], k["L"], k["ffn"], k["qkv"], k["h"]
    per_token = 4 * L * (3 * d + qkv + 2 * ffn) + 4 * L * h * length
    per_row = 4 * (5 * d + h * k["hd"] + qkv + 3 * ffn)
    return per_token, per_row


def saliency_chunks(run, n_steps, ig):
    """tokenlens' chunk plan for these sequences (src/analysis/saliency.rs, saliency_of): one unit
    per (document, alpha) costing its forward tokens plus, when it carries gradients, every
    target's prefix rows; units packed greedily into chunks of at most `chunk` rows. Yields
    (segment lengths, prefix rows) per chunk."""
    units = []
    for seq, plen in zip(run["sequences"], run["prompt_lens"]):
        sources = list(range(plen, len(seq)))  # target at position p explains s[..p]
        passes = [True] if not ig else [False, False] + [True] * n_steps  # needs grad?
        for grad in passes:
            units.append((sources[-1], sum(sources) if grad else 0))
    chunks, cur, cost = [], [], 0
    for u in units:
        c = u[0] + u[1]
        if cur and cost + c > chunk:
            chunks.append(cur)
            cur, cost = [], 0
        cur.append(u)
        cost += c
    if cur:
        chunks.append(cur)
    return chunks


def working_set(task, m, run):
    """(this workload's working set, the bound chunk_tokens puts on it) in bytes."""
    k = model_dims(m)
    d, ffn, qkv = k["d"], k["ffn"], k["qkv"]
    if task == "forward":
        bt = run["batch"] * run["tokens"]
        ws = run["capture_bytes"] + 4 * bt * (qkv + 2 * ffn + 2 * d)
        return ws, ws
    ig = task == "integrated_gradients"
    length = run["max_len"]
    per_token, per_row = saliency_rates(k, length)
    ws = 0
    for c in saliency_chunks(run, run["n_steps"], ig):
        ws = max(ws, sum(saliency_rates(k, n)[0] * n + per_row * rows for n, rows in c))
    return ws, chunk * max(per_token, per_row)


runs = defaultdict(dict)  # (model, task) -> round -> side -> record
for f in sorted(out.glob("r*.time")):
    mt = re.match(r"r(\d+)\.(.+)\.(forward|grad_x_input|integrated_gradients)\.(tokenlens|transformers)\.time$", f.name)
    if not mt:
        continue
    rnd, m, task, side = int(mt[1]), mt[2], mt[3], mt[4]
    kb, wall = peak_kb(f)
    load = f.with_suffix(".load")
    rec = {"rss_kb": kb, "wall_s": wall, "load": float(load.read_text()) if load.exists() else float("nan")}
    stem = f.name[: -len(".time")]
    if task != "forward" and side == "tokenlens":
        j = json.loads((out / f"{stem.rsplit('.', 1)[0]}.tokenlens.out.json").read_text())
        rec.update(value=j["seconds"] / j["generated_tokens"],
                   sequences=j["sequences"], rows=j["rows"], completeness=j["completeness"],
                   prompt_lens=j["prompt_lens"], n_steps=j["n_steps"],
                   max_len=max(len(s) for s in j["sequences"]) - 1)
    else:
        j = load_json(out / f"{stem}.json")
        rec.update(j)
        rec["value"] = j["tokens_per_s_median"] if task == "forward" else j["s_per_token"]
    runs[(m, task)].setdefault(rnd, {})[side] = rec


def parity(ours, theirs, task):
    """Same generated tokens? Largest |score| difference and relative differences of the signed
    sums / target probabilities, over the targets both sides share."""
    same = sum(a == b for a, b in zip(ours["sequences"], theirs["sequences"]))
    n = len(theirs["sequences"])
    if same < n:
        return f"same tokens {same}/{n}"
    rows = defaultdict(dict)
    for r in ours["rows"]:
        rows[(r["doc"], r["target_position"])][r["source_position"]] = r
    dscore = dsum = dprob = 0.0
    comp = {(c["doc"], c["target_position"]): c for c in ours["completeness"]}
    for t in theirs["targets"]:
        ours_t = rows[(t["doc"], t["position"])]
        dscore = max(dscore, max(abs(ours_t[s]["score"] - v) for s, v in enumerate(t["scores"])))
        s_ours = sum(r["signed"] for r in ours_t.values())
        dsum = max(dsum, abs(s_ours - t["attribution_sum"]) / max(abs(t["attribution_sum"]), 1e-30))
        if task == "integrated_gradients":
            c = comp[(t["doc"], t["position"])]
            dprob = max(dprob, abs(c["value"] - t["prob"]) / t["prob"])
    text = f"same tokens {same}/{n}; max |score diff| {dscore:.1e}, max rel. diff of attribution sums {dsum:.1e}"
    if task == "integrated_gradients":
        text += f", of target probs {dprob:.1e}"
    return text


UNIT = {"forward": "tok/s", "grad_x_input": "s/token", "integrated_gradients": "s/token"}
print()
print(f"{'model':11s} {'task':21s} {'round':>5s} {'tokenlens':>11s} {'transformers':>12s} {'ratio':>6s}  unit     (ratio > 1: tokenlens faster)")
summary = []
for (m, task), by_round in sorted(runs.items()):
    ratios = []
    case = {"model": m, "task": task, "unit": UNIT[task], "rounds": []}
    for rnd, sides in sorted(by_round.items()):
        if set(sides) != {"tokenlens", "transformers"}:
            continue
        o, t = sides["tokenlens"]["value"], sides["transformers"]["value"]
        ratio = o / t if task == "forward" else t / o
        ratios.append(ratio)
        case["rounds"].append({"round": rnd, "first": "tokenlens" if rnd % 2 else "transformers",
                               "tokenlens": o, "transformers": t, "ratio": ratio,
                               "tokenlens_peak_rss_mb": sides["tokenlens"]["rss_kb"] / 1024,
                               "transformers_peak_rss_mb": sides["transformers"]["rss_kb"] / 1024,
                               "load_before": {k: sides[k]["load"] for k in sides},
                               "transformers_attn_implementation": sides["transformers"].get("attn_implementation"),
                               "transformers_output_attentions": sides["transformers"].get("output_attentions")})
        fmt = "{:11.1f} {:12.1f}" if task == "forward" else "{:11.3f} {:12.3f}"
        print(f"{m:11s} {task:21s} {rnd:5d} " + fmt.format(o, t) + f" {ratio:6.2f}  {UNIT[task]}")
    if ratios:
        summary.append((m, task, ratios, by_round))
        case["ratios"] = ratios
        case["median_ratio"] = statistics.median(ratios)
        results["cases"].append(case)
if not summary:
    sys.exit(f"error: {out} holds no complete (tokenlens, transformers) pair of results")
print()
print("median ratio over rounds (tokenlens vs transformers; targets: forward >= 1.0, IG >= 3x):")
for m, task, ratios, _ in summary:
    print(f"  {m:11s} {task:21s} {statistics.median(ratios):5.2f}x  (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")

print()
print(f"peak RSS (GNU time, max over rounds; GB = 1e9 bytes) and tokenlens' target, 1.3 x weights ({dtype}) + working set,")
print("with the working set of this workload (tight) and the bound chunk_tokens / the batch put on it (bound)")
print(f"{'model':11s} {'task':21s} {'weights':>7s} {'ws':>5s} {'bound':>5s} {'target':>13s} {'tokenlens':>9s} "
      f"{'met':>7s} {'transformers':>12s}")
for m, task, _, by_round in summary:
    w = model_dims(m)["params"] * BYTES[dtype]
    first = next(iter(by_round.values()))
    ws, bound = working_set(task, m, first["tokenlens"])
    t_tight, t_bound = 1.3 * w + ws, 1.3 * w + bound
    rss_o = max(s["tokenlens"]["rss_kb"] for s in by_round.values()) * 1024
    rss_t = max(s["transformers"]["rss_kb"] for s in by_round.values()) * 1024
    met = "/".join("yes" if rss_o <= t else "NO" for t in (t_tight, t_bound))
    case = next(c for c in results["cases"] if (c["model"], c["task"]) == (m, task))
    case["memory"] = {"weights_bytes": w, "working_set_bytes": ws, "working_set_bound_bytes": bound,
                      "target_tight_bytes": t_tight, "target_bound_bytes": t_bound,
                      "tokenlens_peak_rss_bytes": rss_o, "transformers_peak_rss_bytes": rss_t,
                      "met_tight": rss_o <= t_tight, "met_bound": rss_o <= t_bound}
    print(f"{m:11s} {task:21s} {w / GB:7.2f} {ws / GB:5.2f} {bound / GB:5.2f} {t_tight / GB:6.2f}/{t_bound / GB:6.2f} "
          f"{rss_o / GB:9.2f} {met:>7s} {rss_t / GB:12.2f}")

loads = [s["load"] for _, _, _, br in summary for sides in br.values() for s in sides.values() if s["load"] == s["load"]]
if loads:
    print()
    print(f"1-minute load average before each process: {min(loads):.1f} .. {max(loads):.1f} "
          "(includes the previous process' own threads; much above the thread count: the machine was shared)")
    threads = next(iter(next(iter(runs.values())).values()))["transformers"].get("threads", 2)
    if max(loads) > threads + 1:
        print(f"WARNING: the load exceeded {threads} threads + 1: other processes shared the cores. torch's OpenMP "
              "threads likely lose more than tokenlens' on an oversubscribed machine (each parallel region waits for "
              "a descheduled thread), so the speed ratios above may overstate tokenlens' lead; RSS is unaffected.")
print()
print("checks and one-time costs (outside both timers):")
for m, task, _, by_round in summary:
    for rnd, sides in sorted(by_round.items()):
        o, t = sides["tokenlens"], sides["transformers"]
        if task == "forward":
            note = (f"captures {o['capture_bytes'] / 1e6:.0f} MB vs {t['capture_bytes'] / 1e6:.0f} MB; model load "
                    f"{o['load_s']:.1f} s vs {t['load_s']:.1f} s")
        else:
            note = parity(o, t, task) + f"; transformers warm-up target {t['warmup_s']:.1f} s"
            case = next(c for c in results["cases"] if (c["model"], c["task"]) == (m, task))
            case.setdefault("parity", {})[str(rnd)] = parity(o, t, task)
        print(f"  r{rnd} {m:11s} {task:21s} {note}")
        print(f"     wall (load, generation, everything): tokenlens {o['wall_s']:.0f} s, transformers {t['wall_s']:.0f} s")

results["load_average_range"] = [min(loads), max(loads)] if loads else None
(out / "results.json").write_text(json.dumps(results, indent=1))
