"""What edgeq adds on top of the llama.cpp tools it wraps: convert, inspect, bench and eval ppl, edgeq vs raw.

On the embedded SmolLM2-135M (49k vocabulary) and a random-weight model with
Qwen2.5-0.5B's shape (152k vocabulary, as ``plan_accuracy.py`` makes it), every
measurement alternates edgeq and the raw tool in rounds (the order flips each
round), because this VM drifts ±20–40% within minutes and only ratios taken side
by side mean anything.  Times are whole-process wall times.

* convert: ``edgeq convert SRC --quant Q8_0,Q4_K_M --force`` (F16 + Q8_0 + Q4_K_M, manifest, sha256)
  vs the vendored ``convert_hf_to_gguf.py --outtype f16`` then ``llama-quantize`` for each type;
  per type, edgeq's own seconds for that output (``convert --json``) vs the tool's wall time.
* inspect: ``edgeq inspect Q8_0.gguf``; for scale, gguf-py's ``GGUFReader`` (what inspect used
  before) reading every field of the same file.
* bench: edgeq's bench worker (what ``edgeq bench`` runs per variant: pp 512, then tg 128 at that
  depth) vs ``llama-bench`` with the same file, threads and token counts.
* eval ppl: ``edgeq eval ppl FILE --ctx 512 --max-tokens 4096`` vs ``llama-perplexity -c 512
  --chunks 8`` on the same text (the default Shakespeare); the two perplexities must agree too.

    .venv/bin/python benchmarks/overhead.py                 # 3 rounds, both models
    .venv/bin/python benchmarks/overhead.py --rounds 3 --json benchmarks/results/overhead.json
    .venv/bin/python benchmarks/overhead.py --render     # the docs table again from the JSON, nothing re-run

With ``--json``, the table also goes to ``benchmarks/results/overhead.{txt,md}`` and between the ``overhead``
markers of ``docs/benchmarks/overhead.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results" / "overhead.json"

EDGEQ = [str(Path(sys.executable).with_name("edgeq"))]
TYPES = ["F16", "Q8_0", "Q4_K_M"]
N_PROMPT, N_GEN = 512, 128
PPL_CTX, PPL_WINDOWS = 512, 8
TOOL_STAGES = ("convert_hf_to_gguf", "llama-quantize", "llama-imatrix")
TARGETS = {"convert": 1.05, "inspect_s": 0.5, "bench": 0.03, "eval": 1.2}


def timed(argv: list[str], **kw: Any) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    secs = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({out.returncode}): {(out.stderr or out.stdout)[-2000:]}")
    return secs, out.stdout


def spread(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def ratio(a: list[float], b: list[float]) -> dict[str, float]:
    """Per-round ratios a/b (each pair measured side by side), summarised."""
    return spread([x / y for x, y in zip(a, b)])


def measure_convert(src: Path, work: Path, rounds: int, threads: int) -> dict[str, Any]:
    from edgeq.llamacpp import find_toolchain

    tc = find_toolchain()
    quantize = tc.tool("llama-quantize")
    name = src.name
    edgeq_total, raw_total, raw_hashed, own, hashing = [], [], [], [], []
    edgeq_per: dict[str, list[float]] = {t: [] for t in TYPES}
    raw_per: dict[str, list[float]] = {t: [] for t in TYPES}
    stages: list[dict[str, Any]] = []
    for rnd in range(rounds):
        def edgeq_run() -> None:
            out = work / "edgeq"
            secs, stdout = timed([*EDGEQ, "convert", src, "--quant", "Q8_0,Q4_K_M", "-o", out, "--force", "-q",
                                  "--threads", threads, "--json"])
            res = json.loads(stdout)
            edgeq_total.append(secs)
            # What edgeq spends outside the tools, measured in the same process as the tools' own time,
            # so the VM's drift between an edgeq run and a raw run cannot enter it.
            in_tools = sum(v for o in res["outputs"] for k, v in o["stages"].items() if k in TOOL_STAGES)
            own.append(secs - in_tools)
            hashing.append(sum(v for o in res["outputs"] for k, v in o["stages"].items() if k.startswith("sha256")))
            for o in res["outputs"]:
                edgeq_per[o["type"]].append(o["seconds"])
            stages.append({o["type"]: o["stages"] for o in res["outputs"]})

        def raw_run() -> None:
            out = work / "raw"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            f16 = out / f"{name}-F16.gguf"
            t_conv, _ = timed([sys.executable, tc.converter, src, "--outfile", f16, "--outtype", "f16"])
            raw_per["F16"].append(t_conv)
            total = t_conv
            for q in ("Q8_0", "Q4_K_M"):
                t_q, _ = timed([quantize, f16, out / f"{name}-{q}.gguf", q, str(threads)])
                raw_per[q].append(t_q)
                total += t_q
            raw_total.append(total)
            # What a careful user does by hand to be able to check the files later (edgeq's manifest).
            t_sum, _ = timed(["sha256sum", *sorted(out.glob("*.gguf"))])
            raw_hashed.append(total + t_sum)

        for run in ((edgeq_run, raw_run) if rnd % 2 == 0 else (raw_run, edgeq_run)):
            run()
        print(f"  convert round {rnd + 1}: edgeq {edgeq_total[-1]:.1f} s, raw {raw_total[-1]:.1f} s", flush=True)
    return {"edgeq_s": spread(edgeq_total), "raw_s": spread(raw_total), "ratio": ratio(edgeq_total, raw_total),
            "edgeq_own_s": spread(own), "own_ratio": spread([1 + o / r for o, r in zip(own, raw_total)]),
            "edgeq_sha256_cpu_s": spread(hashing),
            "own_plus_sha256_ratio": spread([1 + (o + h) / r for o, h, r in zip(own, hashing, raw_total)]),
            "raw_with_sha256sum_s": spread(raw_hashed), "ratio_vs_raw_with_sha256sum": ratio(edgeq_total, raw_hashed),
            "per_type": {t: {"edgeq_s": spread(edgeq_per[t]), "raw_s": spread(raw_per[t]),
                             "ratio": ratio(edgeq_per[t], raw_per[t])} for t in TYPES},
            "stages_last_round": stages[-1]}


def measure_inspect(path: Path, rounds: int) -> dict[str, Any]:
    ours, gguf_py = [], []
    old = ("import sys; from gguf import GGUFReader; r = GGUFReader(sys.argv[1]);"
           "[f.contents() for f in r.fields.values()]; [t.n_bytes for t in r.tensors]")
    for _ in range(max(rounds, 5)):
        ours.append(timed([*EDGEQ, "inspect", path])[0])
        timed([*EDGEQ, "inspect", path, "--json"])
        gguf_py.append(timed([sys.executable, "-c", old, path])[0])
    return {"edgeq_inspect_s": spread(ours), "gguf_py_reader_s": spread(gguf_py)}


def measure_bench(path: Path, rounds: int, threads: int) -> dict[str, Any]:
    from edgeq.benchmarking.llama_bench import llama_bench
    from edgeq.benchmarking.prompts import DEFAULT_PROMPTS
    from edgeq.benchmarking.results import RunSpec
    from edgeq.benchmarking.runs import run_worker

    spec = RunSpec(path.stem, str(path), "llama.cpp", path.stem.rsplit("-", 1)[-1], "cpu", threads, 1, N_PROMPT,
                   N_GEN, 1, {"en": DEFAULT_PROMPTS["en"]})
    ours_pp, ours_tg, lb_pp, lb_tg = [], [], [], []
    for rnd in range(rounds):
        def ours() -> None:
            (r,) = run_worker(replace(spec))
            assert r.status == "ok" and r.pp_tps and r.tg_tps, r.reason
            ours_pp.append(statistics.median(r.pp_tps.samples))
            ours_tg.append(statistics.median(r.tg_tps.samples))

        def theirs() -> None:
            pp, tg = llama_bench(str(path), threads=threads, n_prompt=N_PROMPT, n_gen=N_GEN, reps=1)
            lb_pp.append(statistics.median(pp))
            lb_tg.append(statistics.median(tg))

        for run in ((ours, theirs) if rnd % 2 == 0 else (theirs, ours)):
            run()
    return {"edgeq_pp_tps": spread(ours_pp), "llama_bench_pp_tps": spread(lb_pp), "pp_ratio": ratio(ours_pp, lb_pp),
            "edgeq_tg_tps": spread(ours_tg), "llama_bench_tg_tps": spread(lb_tg), "tg_ratio": ratio(ours_tg, lb_tg)}


def measure_eval(path: Path, text: Path, work: Path, rounds: int, threads: int) -> dict[str, Any]:
    from edgeq.llamacpp import find_toolchain

    tool = find_toolchain().tool("llama-perplexity")
    ours, theirs, ppl_ours, ppl_theirs = [], [], [], []
    for rnd in range(rounds):
        def edgeq_run() -> None:
            secs, out = timed([*EDGEQ, "eval", "ppl", path, "--quants", "", "--ctx", PPL_CTX, "--max-tokens",
                               PPL_CTX * PPL_WINDOWS, "--text", text, "-t", threads, "-o", work / "eval.json", "--json"])
            ours.append(secs)
            ppl_ours.append(json.loads(out)["rows"][0]["ppl"])

        def raw_run() -> None:
            secs, ppl = _perplexity(tool, path, text, threads)
            theirs.append(secs)
            ppl_theirs.append(ppl)

        for run in ((edgeq_run, raw_run) if rnd % 2 == 0 else (raw_run, edgeq_run)):
            run()
    return {"edgeq_s": spread(ours), "llama_perplexity_s": spread(theirs), "ratio": ratio(ours, theirs),
            "ppl_edgeq": round(statistics.median(ppl_ours), 4), "ppl_llama_perplexity": round(statistics.median(ppl_theirs), 4)}


def _perplexity(tool: Path, path: Path, text: Path, threads: int) -> tuple[float, float]:
    argv = [str(a) for a in (tool, "-m", path, "-f", text, "-c", PPL_CTX, "--chunks", PPL_WINDOWS, "-b", PPL_CTX,
                             "-t", threads)]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    m = re.search(r"Final estimate: PPL = ([\d.]+)", out.stdout + out.stderr)
    if out.returncode != 0 or not m:
        raise SystemExit(f"llama-perplexity failed: {(out.stderr or out.stdout)[-2000:]}")
    return secs, float(m.group(1))


def table(results: dict[str, Any]) -> str:
    def r(d: dict[str, float]) -> str:
        return f"{d['median']:.3f}× ({d['min']:.3f}–{d['max']:.3f})"

    lines = ["| model | measure | edgeq | raw tool | edgeq / raw (spread) | target |", "|---|---|---|---|---|---|"]
    for model, res in results["models"].items():
        c = res["convert"]
        lines.append(f"| {model} | convert, whole job (F16+Q8_0+Q4_K_M) | {c['edgeq_s']['median']:.1f} s | "
                     f"{c['raw_s']['median']:.1f} s | {r(c['ratio'])} | ≤ 1.05× |")
        lines.append(f"| {model} | convert, whole job vs the tools + `sha256sum` of their outputs | "
                     f"{c['edgeq_s']['median']:.1f} s | {c['raw_with_sha256sum_s']['median']:.1f} s | "
                     f"{r(c['ratio_vs_raw_with_sha256sum'])} | – |")
        lines.append(f"| {model} | convert, edgeq's own time outside the tools (same process, drift-free) | "
                     f"{c['edgeq_own_s']['median']:.2f} s | – | {r(c['own_ratio'])} | ≤ 1.05× |")
        lines.append(f"| {model} | convert, own time + all sha256 CPU, as if no hash overlapped | "
                     f"{c['edgeq_own_s']['median'] + c['edgeq_sha256_cpu_s']['median']:.2f} s | – | "
                     f"{r(c['own_plus_sha256_ratio'])} | ≤ 1.05× |")
        for t in TYPES:
            p = c["per_type"][t]
            tool = "convert_hf_to_gguf.py" if t == "F16" else "llama-quantize"
            lines.append(f"| {model} | convert, {t} output ({tool}) | {p['edgeq_s']['median']:.2f} s | "
                         f"{p['raw_s']['median']:.2f} s | {r(p['ratio'])} | ≤ 1.05× |")
        i = res["inspect"]
        lines.append(f"| {model} | inspect Q8_0 (whole process) | {i['edgeq_inspect_s']['median']:.2f} s | "
                     f"gguf-py GGUFReader {i['gguf_py_reader_s']['median']:.2f} s | – | ≤ 0.5 s |")
        for variant, b in res["bench"].items():
            lines.append(f"| {model} | bench {variant} pp{N_PROMPT} | {b['edgeq_pp_tps']['median']:.1f} t/s | "
                         f"{b['llama_bench_pp_tps']['median']:.1f} t/s | {r(b['pp_ratio'])} | ±3% |")
            lines.append(f"| {model} | bench {variant} tg{N_GEN} | {b['edgeq_tg_tps']['median']:.1f} t/s | "
                         f"{b['llama_bench_tg_tps']['median']:.1f} t/s | {r(b['tg_ratio'])} | ±3% |")
        e = res["eval"]
        lines.append(f"| {model} | eval ppl Q8_0, {PPL_WINDOWS}×{PPL_CTX} tokens (PPL {e['ppl_edgeq']:.3f} vs "
                     f"{e['ppl_llama_perplexity']:.3f}) | {e['edgeq_s']['median']:.1f} s | "
                     f"{e['llama_perplexity_s']['median']:.1f} s | {r(e['ratio'])} | ≤ 1.2× |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench-rounds", type=int, default=5, help="rounds for bench (tg drifts most)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--models", default="smollm2,qwen", help="comma-separated: smollm2, qwen")
    ap.add_argument("--workdir", type=Path, default=REPO / "models" / "overhead")
    ap.add_argument("--json", dest="json_out", type=Path)
    ap.add_argument("--parts", default="convert,inspect,bench,eval",
                    help="what to measure; with --json, the other parts are kept from that file")
    ap.add_argument("--render", action="store_true", help="only the docs table again, from --json's file")
    args = ap.parse_args()
    from readme_table import publish

    if args.render:
        publish("overhead", table(json.loads((args.json_out or RESULTS).read_text(encoding="utf-8"))))
        return

    from plan_accuracy import make_qwen

    from edgeq.conversion import convert
    from edgeq.sources.embedded import ensure_embedded_model
    from edgeq.sources.texts import default_text
    from edgeq.system import cpu_name

    args.workdir.mkdir(parents=True, exist_ok=True)
    text = args.workdir / "text.txt"
    text.write_text(default_text()[0], encoding="utf-8")
    sources = {"smollm2": ensure_embedded_model(), "qwen": None}
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {"cpu": cpu_name(), "threads": args.threads, "models": {}}  # rounds: per part
    if args.json_out and args.json_out.exists() and parts != {"convert", "inspect", "bench", "eval"}:
        results["models"] = json.loads(args.json_out.read_text(encoding="utf-8"))["models"]
    for model in args.models.split(","):
        src = sources[model] or make_qwen(args.workdir / "qwen2.5-0.5b-shape")
        label = "SmolLM2-135M (49k vocab)" if model == "smollm2" else "Qwen2.5-0.5B shape (152k vocab)"
        print(f"{label}: convert", flush=True)
        work = args.workdir / model
        res: dict[str, Any] = results["models"].setdefault(label, {})
        if "convert" in parts:
            res["convert"] = measure_convert(Path(src), work, args.rounds, args.threads) | {"rounds": args.rounds}
        files = {o.type: Path(o.path) for o in convert(str(src), quants=["Q8_0", "Q4_K_M"], outdir=work / "edgeq",
                                                         progress=False).outputs}
        print(f"{label}: {', '.join(sorted(parts - {'convert'}))}", flush=True)
        if "inspect" in parts:
            res["inspect"] = measure_inspect(files["Q8_0"], args.rounds) | {"rounds": max(args.rounds, 5)}
        variants = ["Q8_0", "Q4_K_M"] if model == "smollm2" else ["Q8_0"]
        if "bench" in parts:
            res["bench"] = {v: measure_bench(files[v], args.bench_rounds, args.threads) | {"rounds": args.bench_rounds}
                            for v in variants}
        if "eval" in parts:
            res["eval"] = measure_eval(files["Q8_0"], text, work, args.rounds, args.threads) | {"rounds": args.rounds}
    print(table(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        args.json_out.with_suffix(".txt").write_text(table(results) + "\n", encoding="utf-8")
        publish("overhead", table(results))


if __name__ == "__main__":
    main()
