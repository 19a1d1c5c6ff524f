#!/usr/bin/env python3
"""results.json and results.md of a scripts/bench.sh run, from its directory alone (standard
library only; rerunnable on it).

  python3 scripts/bench_report.py OUT_DIR STARTED_UTC [quick|""] NAME...

Reads, per comparison NAME, OUT_DIR/NAME/status.json (exit code, seconds, command) and, when the
exit code is 0, OUT_DIR/NAME/results.json (the figures its script wrote in this run); nothing
outside OUT_DIR. A failed comparison gets its status and the end of its stderr.log, no figures.
Writes OUT_DIR/results.json (the machine: CPU model, cores, flags, RAM; the date; the commit;
every comparison) and OUT_DIR/results.md (the same as tables).
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
         "amx_bf16", "amx_int8")


def machine():
    cpu, flags = None, set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.strip() == "model name" and cpu is None:
                cpu = v.strip()
            if k.strip() == "flags" and not flags:
                flags = set(v.split())
    mem_kb = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpu": cpu, "cores": os.cpu_count(), "flags": {x: x in flags for x in FLAGS},
            "amx": any(x.startswith("amx") for x in flags),
            "ram_gib": round(mem_kb / 2**20, 1) if mem_kb else None, "kernel": platform.release(),
            "load_average_at_end": [float(x) for x in load]}


def git():
    def run(*cmd):
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    return {"commit": run("rev-parse", "HEAD"), "branch": run("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def f(x, fmt="{:.2f}"):
    return "–" if x is None else fmt.format(x)


def joined(xs, fmt="{:.2f}"):
    return ", ".join(f(x, fmt) for x in xs)


def md_forward(r):
    out = ["| threads | capture | transformers attention | tokenlens tok/s | transformers tok/s | ratio per round | median ratio |",
           "|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        rs = c["rounds"]
        out.append(f"| {c['threads']} | {c['capture']} | {c['transformers_attn_implementation']} | "
                   f"{joined([x['tokenlens_tok_s'] for x in rs], '{:.0f}')} | {joined([x['transformers_tok_s'] for x in rs], '{:.0f}')} | "
                   f"{joined(c['ratios'])} | **{c['median_ratio']:.2f}** |")
    return out


def md_saliency(r):
    out = ["| method | tokenlens s/token | Ecco s/token | speed-up per round | median | max \\|score diff\\| | same tokens |",
           "|---|---|---|---|---|---|---|"]
    for m, c in r["methods"].items():
        rs = c["rounds"]
        out.append(f"| {m} | {joined([x['tokenlens_s_per_token'] for x in rs], '{:.4f}')} | "
                   f"{joined([x['ecco_s_per_token'] for x in rs], '{:.3f}')} | {joined(c['speedups'], '{:.1f}x')} | "
                   f"**{c['median_speedup']:.1f}x** | {f(max(x['max_abs_score_diff'] for x in rs), '{:.1e}')} | "
                   f"{', '.join(x['same_tokens'] for x in rs)} |")
    return out


def md_nmf(r):
    out = []
    for label, x in r["inputs"].items():
        out.append(f"**{label}** ({x['rows']:,} x {x['cols']:,}, k = {x['k']}, max_iter {x['max_iter']}, "
                   f"scikit-learn {x['versions']['sklearn']}, start: {x['init']})")
        out.append("")
        out.append("| seed | first | same start | scikit-learn cd: error, fit s, iterations | tokenlens: error | time to its error "
                   "(within 0.1%) | ratio | equal work (--sweeps 1): error, solve s, ratio | streamed ratio | "
                   "peak RSS: tokenlens / scikit-learn fit (X + delta) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for s in x["seeds"]:
            sk, tl, c = s.get("sklearn-cd"), s.get("tokenlens"), s.get("vs_sklearn-cd")
            if not (sk and tl and c):
                continue
            ew, ewc = s.get("equal_work_tokenlens"), s.get("equal_work_vs_sklearn-cd")
            st = s.get("streamed_vs_sklearn-cd")
            out.append(
                f"| {s['seed']} | {s['first']} | {s.get('init_check', {}).get('same_start', '–')} | "
                f"{sk['relative_error']:.5f}, {sk['fit_s']:.2f}, {sk['n_iter']} | {tl['relative_error']:.5f} | "
                f"{f(c['tokenlens_seconds'])} s ({f(c['tokenlens_iteration_within_0.1pct'], '{}')} it.) | "
                f"{f(c['time_ratio_within_0.1pct'], '{:.3f}x')} | "
                + (f"{ew['relative_error']:.5f}, {ew['solve_s']:.2f}, {ewc['solve_ratio']:.3f}x" if ew and ewc else "–")
                + f" | {f(st['time_ratio_within_0.1pct'], '{:.3f}x') if st else '–'} | "
                f"{tl['peak_rss_mb']:.0f} / {sk['fit_footprint_mb']:.0f} MB ({c['peak_rss_ratio']:.2f}x) |")
        out.append("")
    return out


def md_memory(r):
    out = [f"pipeline {r['pipeline']}", "",
           "| scale | prompts | tokens | windows | wall s | tokens/s | peak RSS (GNU time) | first half | second half | after the windows |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["scales"]:
        out.append(f"| {s['scale']}x | {s['prompts']:,} | {s['tokens']:,} | {s['windows']} | {s['wall_s']:.0f} | "
                   f"{s['tokens_per_s']:.1f} | {s['peak_rss_mb']:,.0f} MB | {f(s['rss_peak_first_half_mb'], '{:,.0f} MB')} | "
                   f"{f(s['rss_peak_second_half_mb'], '{:,.0f} MB')} | {f(s['rss_peak_after_windows_mb'], '{:,.0f} MB')} |")
    if "peak_rss_ratio_last_to_first" in r:
        out += ["", f"peak RSS, largest scale / smallest: **{r['peak_rss_ratio_last_to_first']:.3f}**"]
    return out


def md_viewer(r):
    return ["| prompts | run size | cold start per pass | median | target |", "|---|---|---|---|---|",
            f"| {r['prompts']:,} | {r['run_bytes'] / 1e6:.0f} MB | {', '.join(f'{x} ms' for x in r['cold_start_ms'])} | "
            f"**{r['median_cold_start_ms']:.0f} ms** | < 1000 ms: {'met' if r['met'] else 'NOT met'} |"]


def md_1b(r):
    out = [f"dtype {r['dtype']}", "",
           "| model | task | transformers attention | tokenlens | transformers | unit | ratio per round | median | "
           "peak RSS tokenlens / transformers | memory target (tight / bound) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        rs, m = c["rounds"], c.get("memory", {})
        attn = sorted({str(x.get("transformers_attn_implementation")) for x in rs})
        fmt = "{:.1f}" if c["task"] == "forward" else "{:.3f}"
        mem = (f"{m['tokenlens_peak_rss_bytes'] / 1e9:.2f} / {m['transformers_peak_rss_bytes'] / 1e9:.2f} GB"
               if m else "–")
        met = (f"{'met' if m['met_tight'] else 'NOT met'} / {'met' if m['met_bound'] else 'NOT met'}" if m else "–")
        out.append(f"| {c['model']} | {c['task']} | {', '.join(attn)} | {joined([x['tokenlens'] for x in rs], fmt)} | "
                   f"{joined([x['transformers'] for x in rs], fmt)} | {c['unit']} | {joined(c['ratios'])} | "
                   f"**{c['median_ratio']:.2f}** | {mem} | {met} |")
    return out


def md_workflow(r):
    out = ["| round | variant | Ecco s (computations) | tokenlens s (computations) | ratio computations / processes | "
           "peak RSS Ecco / tokenlens | max \\|score diff\\| |", "|---|---|---|---|---|---|---|"]
    for rnd in r["rounds"]:
        e = rnd["ecco"]
        for v, t in rnd["tokenlens"].items():
            et = e["total_s"] if v != "noig" else e["total_without_ig_s"]
            out.append(f"| {rnd['round']} | {v} | {et:.1f} | {t['compute_s']:.1f} | "
                       f"**{t['ratio_compute']:.1f}x** / {t['ratio_process']:.1f}x | {e['peak_rss_mb']:,.0f} / {t['peak_rss_mb']:,.0f} MB | "
                       + ", ".join(f"{m} {w:.1e}" for m, w in t["worst_score_diff"].items()) + " |")
    if r.get("failures"):
        out += ["", "failures: " + "; ".join(r["failures"])]
    return out


def md_compare(r):
    out = ["| case | rows | round (first) | tokenlens s / peak RSS | Ecco s (load + metrics) / peak RSS | "
           "Ecco / tokenlens time, RSS | max \\|tokenlens - Ecco\\| |", "|---|---|---|---|---|---|---|"]
    for case, c in r["cases"].items():
        worst = ", ".join(f"{k} {w['max_abs_diff']:.1e}" for k, w in c["check"]["worst"].items())
        rows = ", ".join(f"{s} {n:,}" for s, n in c["rows"].items())
        for rnd in c["rounds"]:
            t, e = rnd["tokenlens"], rnd["ecco"]
            out.append(f"| {case} | {rows} | {rnd['round']} ({rnd['first']}) | {t['wall_s']:.1f} s / {t['peak_rss_mb']:,.0f} MB | "
                       f"{e['wall_s']:.1f} s ({e['load_s']:.1f} + {e['compute_s']:.1f}) / {e['peak_rss_mb']:,.0f} MB | "
                       f"**{rnd['ratio_wall']:.1f}x**, {rnd['ratio_rss']:.1f}x | {worst} |")
    return out


def md_gemm(r):
    amx = r.get("amx", False)
    head = "| shape (k -> n) | tokenlens f32 (gemm crate): as stored / transposed | torch f32 | ratio | torch bf16 | bf16 / f32 |"
    rule = "|---|---|---|---|---|---|"
    if amx:
        head += " tokenlens AMX bf16: as stored / transposed | / torch bf16 |"
        rule += "---|---|"
    out = [f"{r['rows']} rows, {r['threads']} thread(s), torch {r['torch']}; GFLOP/s, medians of {r['rounds']} rounds",
           "", head, rule]
    for s in r["shapes"]:
        line = (f"| {s['name']} ({s['k']} -> {s['n']}) | {s['median_tokenlens_f32']:.1f} / {s['median_tokenlens_f32_transposed']:.1f} | "
                f"{s['median_torch_f32']:.1f} / {s['median_torch_f32_transposed']:.1f} | **{s['ratio']:.2f}** | "
                f"{s['median_torch_bf16']:.1f} | {s['torch_bf16_over_f32']:.1f}x |")
        if amx:
            line += (f" {s['median_tokenlens_amx_bf16']:.1f} / {s['median_tokenlens_amx_bf16_transposed']:.1f} | "
                     f"{s['amx_over_torch_bf16']:.2f} |")
        out.append(line)
    return out


def md_quickstart(r):
    p = r["precisions"]
    out = [f"pipelines/quickstart.yaml, medians of {r['rounds']} round(s)", "",
           "| products | wall s | saliency s | peak RSS MB | AMX ran them |", "|---|---|---|---|---|"]
    for c in ("f32", "bf16"):
        out.append(f"| {c} | {p[c]['median_wall_s']:.1f} | {p[c]['median_saliency_s']:.1f} | "
                   f"{p[c]['max_peak_rss_mb']:,.0f} | {p[c]['amx']} |")
    out += ["", f"f32 / bf16: **{r['ratio_f32_over_bf16']:.2f}x** (target: the quickstart <= 120 s on 2 cores)"]
    return out


TABLES = {"forward": md_forward, "saliency": md_saliency, "nmf": md_nmf, "memory": md_memory,
          "viewer": md_viewer, "1b": md_1b, "workflow": md_workflow,
          "compare": md_compare, "gemm": md_gemm, "quickstart": md_quickstart}
TITLES = {"forward": "Batched forward vs transformers", "saliency": "Saliency vs Ecco",
          "nmf": "Corpus NMF vs scikit-learn", "memory": "Pipeline memory", "viewer": "Viewer cold start",
          "1b": "1B-class models vs transformers", "workflow": "The whole workflow vs Ecco",
          "compare": "Comparing runs: layer similarity vs Ecco", "gemm": "The f32 gemm rate vs torch",
          "quickstart": "The quickstart pipeline, f32 and bf16 products"}


def main():
    out, started, quick, names = sys.argv[1], sys.argv[2], sys.argv[3] == "quick", sys.argv[4:]
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), "started": started,
           "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "quick": quick, "machine": machine(), "git": git(),
           "env": {k: os.environ.get(k) for k in ("ROUNDS", "THREADS", "DTYPE", "TASKS", "IG_TOLERANCE",
                                                  "WORKFLOW_LIMIT", "FORWARD_THREADS", "VIEWER_PROMPTS")
                   if os.environ.get(k) is not None},
           "comparisons": {}}
    for name in names:
        d = os.path.join(out, name)
        try:
            with open(os.path.join(d, "status.json")) as fh:
                st = json.load(fh)
        except OSError:
            st = {"name": name, "exit_code": None, "command": None, "seconds": None}
        rec = {"status": "ok" if st["exit_code"] == 0 else "failed", "exit_code": st["exit_code"],
               "seconds": st["seconds"], "command": st["command"], "results": None}
        if st["exit_code"] == 0:
            try:
                with open(os.path.join(d, "results.json")) as fh:
                    rec["results"] = json.load(fh)
            except (OSError, ValueError) as e:
                rec["status"], rec["error"] = "failed", f"its script exited 0 but wrote no readable results.json ({e})"
        if rec["status"] == "failed" and "error" not in rec:
            try:
                with open(os.path.join(d, "stderr.log"), errors="replace") as fh:
                    rec["error"] = "".join(fh.readlines()[-15:]).strip()
            except OSError:
                rec["error"] = "no stderr.log"
        res["comparisons"][name] = rec
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1)

    m = res["machine"]
    flags = ", ".join(k for k, v in m["flags"].items() if v) or "none of " + ", ".join(FLAGS)
    md = [f"# tokenlens benchmarks, {res['date']}" + (" (QUICK=1 smoke run: the figures mean nothing)" if quick else ""),
          "", f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; flags: {flags}",
          f"- started {started}, finished {res['finished']}; commit {res['git']['commit']}"
          + (" (with uncommitted changes)" if res["git"]["dirty"] else ""),
          f"- settings: {', '.join(f'{k}={v}' for k, v in res['env'].items()) or 'defaults'}", ""]
    for name, rec in res["comparisons"].items():
        md += [f"## {TITLES[name]} (`{name}`)", "", f"`{rec['command']}` — {rec['status']}"
               + (f", {rec['seconds']} s" if rec["seconds"] is not None else ""), ""]
        if rec["results"] is not None:
            try:
                md += TABLES[name](rec["results"])
            except (KeyError, TypeError, ValueError, statistics.StatisticsError) as e:
                md.append(f"(no table: {type(e).__name__} {e}; the figures are in results.json)")
        else:
            md += ["```", rec.get("error", ""), "```"]
        md.append("")
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
