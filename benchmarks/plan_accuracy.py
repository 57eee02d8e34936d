"""How close `edgeq plan` gets: predicted vs measured file size, peak RSS and generation speed.

For every quant of the embedded SmolLM2-135M (llama) and of a random-weight model with
Qwen2.5-0.5B's shape (qwen2, 152k vocabulary) this script predicts from the HF checkpoint's
headers, converts with edgeq, then loads each GGUF with llama-cpp-python in a fresh process
(flash attention on, as llama.cpp's tools default to), processes a prompt, generates, and
records peak RSS at ctx 512 and 4096 and generation tok/s.

Calibration happens inside the run, as `edgeq plan --calibrate` does it from bench results:
the runtime overhead is fitted on one file (the embedded model's Q8_0 at ctx 512).  The
generation model (an efficiency per kernel family + a per-token overhead,
``calibrate.fit_families``) is fitted three ways: on each model's own six runs (in sample),
on the other model's runs (out of sample: the question a user asks of a model not yet
converted) and on all twelve runs (the only fit that can see the per-token overhead, which
needs two model sizes).  Timings use one thread, are interleaved in rounds (every file once
per round, so drift hits all alike), and the median is kept.

    .venv/bin/python benchmarks/plan_accuracy.py [--workdir models/plan-accuracy] [--rounds 3]
    .venv/bin/python benchmarks/plan_accuracy.py --render     # the docs tables again from the JSON, nothing re-run

With ``--json``, the tables also go to ``benchmarks/results/plan-accuracy{,-tg}.md`` and between their markers in
``docs/benchmarks/plan-accuracy.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "plan_accuracy.json"

QUANTS = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
CTXS = [512, 4096]
N_PROMPT, N_GEN = 256, 128
FILL = N_PROMPT + N_GEN // 2  # the mean context attended while generating
# Qwen2.5-0.5B's config.json (numbers only); weights are random.
QWEN_CONFIG = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                   num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                   tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6)


def worker(path: str, ctx: int, threads: int) -> None:
    """In a fresh process: load, prompt, generate; print RSS figures and tok/s as JSON."""
    from edgeq.llamacpp import import_llama_cpp

    Llama = import_llama_cpp().Llama

    def status(key: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of a big parent reads the parent's peak.
    base = status("VmRSS")
    llm = Llama(model_path=path, n_ctx=ctx, n_batch=512, n_threads=threads, flash_attn=True, verbose=False)
    loaded = status("VmRSS")
    llm.eval(list(range(1000, 1000 + min(N_PROMPT, ctx - N_GEN - 1))))
    t0 = time.perf_counter()
    for i in range(N_GEN):
        llm.eval([2000 + i])
    tg = N_GEN / (time.perf_counter() - t0)
    peak = status("VmHWM")
    print(json.dumps({"base_rss": base, "loaded_rss": loaded, "peak_rss": peak, "tg_tps": tg}), flush=True)
    os._exit(0)


def measure(path: Path, ctx: int, threads: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--worker", str(path), str(ctx), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_qwen(dest: Path) -> Path:
    """A random-weight Qwen2 with Qwen2.5-0.5B's shape and Qwen2's real tokenizer."""
    if (dest / "config.json").exists():
        return dest
    import torch
    import transformers

    from edgeq import config

    tok = transformers.AutoTokenizer.from_pretrained(config.llama_dir() / "models", gguf_file="ggml-vocab-qwen2.gguf")
    cfg = transformers.Qwen2Config(**QWEN_CONFIG, bos_token_id=tok.bos_token_id or 151643, eos_token_id=151643)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(REPO / "models" / "plan-accuracy"))
    ap.add_argument("--rounds", type=int, default=5, help="repetitions of every speed run, interleaved")
    ap.add_argument("--json", dest="json_out", help="write the rows here too")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads per run")
    ap.add_argument("--fresh", action="store_true", help="measure again instead of resuming from measurements.json")
    ap.add_argument("--render", action="store_true", help="only the docs tables again, from --json's file")
    args = ap.parse_args()
    if args.render:
        publish_tables(json.loads(Path(args.json_out or RESULTS).read_text()))
        return

    from edgeq.conversion import convert
    from edgeq.llamacpp import measure_bandwidth
    from edgeq.planning import memory, source
    from edgeq.planning.calibrate import fit_families
    from edgeq.planning.devices import this_machine
    from edgeq.planning.size import predict_size, tensor_bytes, tensor_types
    from edgeq.planning.speed import family_bytes, matmul_weights, tg_tps

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    # One thread: on this shared 2-core VM a second thread waits at every barrier for a core another job holds,
    # which made 2-thread tg swing 5× between identical runs; one thread is slower but steady.
    threads = args.threads
    models = {"SmolLM2-135M (llama)": REPO / "models" / "hf" / "SmolLM2-135M-Instruct",
              "Qwen2.5-0.5B shape (qwen2)": make_qwen(work / "qwen2.5-0.5b-random")}
    files: dict[tuple[str, str], Path] = {}
    specs = {}
    for label, hf in models.items():
        specs[label] = source.load(str(hf))
        res = convert(hf, quants=QUANTS, outdir=work / f"{hf.name}-gguf", progress=False)
        for o in res.outputs:
            files[(label, o.type)] = Path(o.path)

    bw_before = measure_bandwidth()["read_gbps"]  # type: ignore[index]
    device = this_machine(bandwidth_gbps=bw_before)
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    cache = work / "measurements.json"  # every measurement as it is taken: an interrupted run resumes
    done = json.loads(cache.read_text()) if cache.exists() and not args.fresh else {}
    for r in range(args.rounds):  # rounds across the matrix, so drift hits every file alike
        for (label, q), path in files.items():
            for ctx in CTXS:
                if r > 0 and ctx != CTXS[0]:
                    continue  # memory does not drift: one run at the large context is enough
                key = f"{label}|{q}|{ctx}|{r}"
                if key not in done:
                    done[key] = measure(path, ctx, threads)
                    cache.write_text(json.dumps(done))
                runs.setdefault((label, q, ctx), []).append(done[key])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    bw_after = measure_bandwidth()["read_gbps"]  # type: ignore[index]
    # The bandwidth that goes with the timings: the one measured when they were taken.
    bw_before, bw_after = done.setdefault("_bandwidth_gbps", [bw_before, bw_after])
    done.setdefault("_measured", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    cache.write_text(json.dumps(done))
    bandwidth = (bw_before + bw_after) / 2

    def predicted(label: str, q: str, ctx: int, overhead: int) -> tuple[int, int, dict[str, int], int]:
        spec = specs[label]
        types = tensor_types(spec, q)
        sizes = [tensor_bytes(t.shape, ty) for t, ty in zip(spec.tensors, types)]
        repacked = sum(b for b, ty in zip(sizes, types) if ty in device.repack_types)
        size = predict_size(spec, q).file_size_bytes
        mem = memory.estimate(spec, size, ctx=ctx, repacked_bytes=repacked, overhead_bytes=overhead)
        return size, mem.total_bytes, family_bytes(spec, types, sizes, fill_tokens=FILL), matmul_weights(spec)

    # Calibration: overhead on one reference file, the generation model per model and on both.
    ref = ("SmolLM2-135M (llama)", "Q8_0")
    _, no_overhead, _, _ = predicted(*ref, CTXS[0], 0)
    overhead = int(statistics.median(x["peak_rss"] for x in runs[(*ref, CTXS[0])])) - no_overhead

    def fit(labels: list[str]):
        return fit_families([(predicted(label, q, CTXS[0], 0)[2], predicted(label, q, CTXS[0], 0)[3],
                              statistics.median(x["tg_tps"] for x in runs[(label, q, CTXS[0])]))
                             for (label, q) in files if label in labels], bandwidth)

    labels = list(models)
    fits = {"self": {m: fit([m]) for m in labels}, "cross": {m: fit([o for o in labels if o != m]) for m in labels},
            "both": fit(labels)}

    def tg_pred(f, fam: dict[str, int]) -> float:
        return tg_tps(fam, bandwidth_gbps=bandwidth, efficiency=f.efficiency, family_efficiency=f.family_efficiency,
                      overhead_s=f.overhead_s)[0]

    rows = []
    for (label, q), path in files.items():
        real_size = path.stat().st_size
        for ctx in CTXS:
            size, rss, bpt, weights = predicted(label, q, ctx, overhead)
            got = runs[(label, q, ctx)]
            peak = statistics.median(x["peak_rss"] for x in got)
            row = {"model": label, "quant": q, "ctx": ctx, "size_pred": size, "size_real": real_size,
                   "rss_pred": rss, "rss_real": peak}
            if ctx == CTXS[0]:
                row.update(tg_real=statistics.median(x["tg_tps"] for x in got),
                           tg_samples=[round(x["tg_tps"], 1) for x in got],
                           tg_pred_self=tg_pred(fits["self"][label], bpt),
                           tg_pred_cross=tg_pred(fits["cross"][label], bpt), tg_pred_both=tg_pred(fits["both"], bpt))
            rows.append(row)
    calib = {"self": {m: _fit_json(f) for m, f in fits["self"].items()}, "both": _fit_json(fits["both"])}
    data = {"rows": rows, "overhead_bytes": overhead, "tg_fits": calib, "bandwidth_gbps": bandwidth,
            "bandwidth_readings_gbps": [bw_before, bw_after], "threads": threads, "rounds": args.rounds,
            "n_prompt": N_PROMPT, "n_gen": N_GEN, "measured": done.get("_measured")}
    print(f"Overhead fitted on {ref[0]} {ref[1]} at ctx {CTXS[0]}.")
    sizes, speeds = tables(data)
    print(sizes + "\n\n" + speeds)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(data, indent=1))
        publish_tables(data)


def publish_tables(data: dict) -> None:
    from readme_table import publish

    sizes, speeds = tables(data)
    publish("plan-accuracy", sizes)
    publish("plan-accuracy-tg", speeds)


def _fit_json(f) -> dict[str, object]:
    return {"efficiency": round(f.efficiency, 4), "overhead_ms": round(f.overhead_s * 1e3, 3),
            "family_efficiency": {k: round(v, 4) for k, v in f.family_efficiency.items()}}


def _err(pred: float, real: float) -> str:
    return f"{(pred - real) / real:+.1%}"


def tables(data: dict) -> tuple[str, str]:
    """The size and peak-RSS table, and the generation table with the fits behind it, from the JSON."""
    mib, rows = 2**20, data["rows"]
    first_ctx = min(r["ctx"] for r in rows)
    out = [f"{data['threads']} thread(s), {data['rounds']} rounds, measured {data['measured']}. Runtime overhead "
           f"fitted on SmolLM2 Q8_0 at ctx {first_ctx}: {data['overhead_bytes'] / mib:.0f} MiB.", "",
           "| model | quant | file size pred / real MiB (err) | ctx | peak RSS pred / real MiB (err) |", "|---|---|---|---|---|"]
    for r in rows:
        first = r["ctx"] == first_ctx
        size = f"{r['size_pred'] / mib:.1f} / {r['size_real'] / mib:.1f} ({_err(r['size_pred'], r['size_real'])})"
        out.append(f"| {r['model'] if first else ''} | {r['quant'] if first else ''} | {size if first else ''} "
                   f"| {r['ctx']} | {r['rss_pred'] / mib:.0f} / {r['rss_real'] / mib:.0f} "
                   f"({_err(r['rss_pred'], r['rss_real'])}) |")
    worst = {k: max(abs(r[f"{k}_pred"] - r[f"{k}_real"]) / r[f"{k}_real"] for r in rows) for k in ("size", "rss")}
    out.append(f"\nWorst error: size {worst['size']:.1%} (goal 2%), peak RSS {worst['rss']:.1%} (goal 10%).")
    tg = [r for r in rows if "tg_real" in r]
    per_model = len(tg) // 2
    speed = ["| model | quant | tg tok/s measured, median (min–max) | in sample (own runs) | out of sample (other "
             "model's runs) | both models' runs |", "|---|---|---|---|---|---|"]
    for r in tg:
        preds = " | ".join(f"{r[k]:.0f} ({_err(r[k], r['tg_real'])})" for k in ("tg_pred_self", "tg_pred_cross",
                                                                                 "tg_pred_both"))
        speed.append(f"| {r['model']} | {r['quant']} | {r['tg_real']:.0f} ({min(r['tg_samples']):.0f}–"
                     f"{max(r['tg_samples']):.0f}) | {preds} |")
    worst = {k: max(abs(r[f"tg_pred_{k}"] - r["tg_real"]) / r["tg_real"] for r in tg) for k in ("self", "cross", "both")}
    speed.append(f"\nWorst tg error (goal 25%): in sample {worst['self']:.1%}, out of sample {worst['cross']:.1%}, "
                 f"both models {worst['both']:.1%}.")

    def families(f: dict) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in f["family_efficiency"].items())

    fits = data["tg_fits"]
    readings = data.get("bandwidth_readings_gbps")  # older results files kept only the mean
    read = f" (the mean of {readings[0]:.1f} before and {readings[1]:.1f} after the runs)" if readings else ""
    speed.append(f"\nFits, as efficiencies of {data['bandwidth_gbps']:.1f} GB/s{read}, {per_model} runs a model: "
                 + "; ".join(f"{m} alone {families(f)}" for m, f in fits["self"].items())
                 + f"; both {families(fits['both'])}, overhead {fits['both']['overhead_ms']:.1f} ms per token.")
    return "\n".join(out), "\n".join(speed)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
