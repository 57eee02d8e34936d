"""`edgeq tune` against llama.cpp's stock recipes at their own sizes, on two models.

    .venv/bin/python benchmarks/tune.py [--models embedded,qwen] [--all-types] [--out DIR] [--render]

For each model, `edgeq tune` runs at the exact size of its stock Q4_K_M and of its stock Q3_K_M (both made
with the same importance matrix; the sizes come from `edgeq plan`, which predicts them to the byte).  The
first tune of a model starts cold (its stage times are the "how long" figures); the second reuses every
measurement.  Headline rows exclude the types the model's float weights were dequantized from, which would
recover them almost exactly and say nothing about a model trained in 16 bits:

- embedded SmolLM2-135M-Instruct (from a Q4_1 file): no Q4_1, no Q5_1;
- Qwen2.5-Coder-0.5B-Instruct (benchmarks/qwen05b.py, from a Q4_K_M file): no Q5_0, Q4_K, Q6_K, Q8_0.

``--all-types`` adds labelled rows with every type.  Prints the KLD ratios and predicted-vs-measured, and
writes ``benchmarks/results/tune.{json,md}`` (``--render`` only rewrites the Markdown and the table in ``docs/benchmarks/tune.md``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import qwen05b  # noqa: E402
from readme_table import publish  # noqa: E402

from edgeq.planning import plan  # noqa: E402
from edgeq.sources.embedded import ensure_embedded_model  # noqa: E402
from edgeq.tuning import tune  # noqa: E402
from edgeq.tuning.sensitivity import CANDIDATES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODELS = {
    "embedded": ("SmolLM2-135M-Instruct (embedded; dequantized from Q4_1)", ("Q4_1", "Q5_1")),
    "qwen": ("Qwen2.5-Coder-0.5B-Instruct (dequantized from Q4_K_M)", qwen05b.SOURCE_TYPES),
}
STOCK = ("Q4_K_M", "Q3_K_M")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="embedded,qwen")
    ap.add_argument("--all-types", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "models" / "bench-tune"))
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    path = RESULTS / "tune.json"
    if args.render:
        render(json.loads(path.read_text()))
        return
    old = json.loads(path.read_text()) if path.is_file() else {"runs": [], "cold": {}}
    keys = args.models.split(",")
    runs = [r for r in old["runs"] if r["model_key"] not in keys]
    cold = dict(old["cold"])
    fresh: set[str] = set()  # models whose cold figure this run replaces
    for key in keys:
        label, source_types = MODELS[key]
        folder = ensure_embedded_model(ROOT / "models") if key == "embedded" else qwen05b.ensure()
        sizes = {r.quant: r.file_size_bytes for r in plan(str(folder), quants=list(STOCK)).rows}
        headline = [t for t in CANDIDATES if t not in source_types]
        variants = [("headline", headline)] + ([("all types (source's types recover its weights)", None)]
                                               if args.all_types else [])
        for stock in STOCK:
            for name, types in variants:
                t0 = time.perf_counter()
                d = tune(str(folder), size=sizes[stock], types=types, outdir=Path(args.out) / key,
                         progress=False).to_dict()
                seconds = time.perf_counter() - t0
                # A first tune is cold only if it made the importance matrix; one that reused an earlier run's
                # work folder keeps that run's cold figure.
                if key not in fresh and (key not in cold or d["stages"].get("imatrix", 0) > 1):
                    cold[key] = {"seconds": round(seconds, 1), "stages": d["stages"]}
                fresh.add(key)
                rows = {r["label"]: r for r in d["rows"]}
                tuned, ref = rows["tuned"], rows[f"{stock} (imatrix)"]
                runs.append({"model_key": key, "model": label, "stock": stock, "candidates": name,
                             "excluded": [] if types is None else list(source_types), "seconds": round(seconds, 1),
                             "tuned": tuned, "stock_row": ref, "kld_ratio": tuned["kld_mean"] / ref["kld_mean"],
                             "size_ratio": tuned["size_bytes"] / ref["size_bytes"],
                             "predicted_over_measured": d["predicted_kld"] / tuned["kld_mean"],
                             "stages": d["stages"], "type_shares": d["type_shares"], "verdict": d["verdict"],
                             "calibration": d["calibration"], "rows": d["rows"]})
                r = runs[-1]
                print(f"{key:8} {stock:7} {name[:24]:24} KLD {tuned['kld_mean']:.4g} vs {ref['kld_mean']:.4g} = "
                      f"{r['kld_ratio']:.2f}x at {r['size_ratio']:.4f}x size; predicted/measured "
                      f"{r['predicted_over_measured']:.2f}; {seconds:.0f} s", flush=True)
    data = {"command": "benchmarks/tune.py " + " ".join(sys.argv[1:]), "eval": "The Tempest, 8,192 tokens; KLD to F16",
            "cold": cold, "runs": runs}
    path.write_text(json.dumps(data, indent=1) + "\n")
    render(data)


def render(data: dict) -> None:
    """benchmarks/results/tune.md and the table in docs/benchmarks/tune.md (between its tune:begin/end markers)."""
    lines = ["| model | stock recipe (imatrix) | candidates | stock KLD | tuned KLD | KLD ratio | size ratio | "
             "pp ratio | tg ratio | predicted / measured KLD |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        cands = r["candidates"] if not r["excluded"] else f"{r['candidates']} (no {', '.join(r['excluded'])})"
        lines.append(f"| {r['model']} | {r['stock']} | {cands} | {r['stock_row']['kld_mean']:.4g} | "
                     f"{r['tuned']['kld_mean']:.4g} | **{r['kld_ratio']:.2f}×** | {r['size_ratio']:.4f}× | "
                     f"{_ratio(r, 'pp_tps')} | {_ratio(r, 'tg_tps')} | {r['predicted_over_measured']:.2f} |")
    lines.append("")
    for key, c in data["cold"].items():
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in c["stages"].items())
        lines.append(f"- First (cold) tune of `{key}`: {c['seconds'] / 60:.1f} min in all ({stages}).")
    publish("tune", "\n".join(lines))

def _ratio(r: dict, key: str) -> str:
    """Tuned over stock, measured interleaved in the verification (runs before issue 33 have none)."""
    a, b = r["tuned"].get(key), r["stock_row"].get(key)
    return f"{a / b:.2f}×" if a and b else "—"


if __name__ == "__main__":
    main()
