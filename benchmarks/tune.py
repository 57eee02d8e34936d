"""`edgeq tune` against llama.cpp's stock recipes at their own sizes, on the embedded model.

    .venv/bin/python benchmarks/tune.py [--out DIR]

Runs `edgeq tune` twice on the embedded SmolLM2-135M, at the size of its stock Q4_K_M and of its stock Q3_K_M
(both made with the same importance matrix), each as the headline (candidates without Q4_1 and Q5_1: the
embedded weights were dequantized from a Q4_1 file, so those two types recover them almost exactly, which
says nothing about a model trained in 16 bits) and, labelled, with every type.  Prints the KLD ratios and the
predicted-vs-measured error, and writes ``benchmarks/results/tune.{json,txt}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from edgeq.tune import tune  # noqa: E402
from edgeq.tune.sensitivity import CANDIDATES  # noqa: E402

HEADLINE = [t for t in CANDIDATES if t not in ("Q4_1", "Q5_1")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "models" / "bench-tune"))
    out = Path(ap.parse_args().out)
    t0 = time.perf_counter()
    # A first tune fills every cache (imatrix, per-type files, errors, probes) and makes the stock files.
    first = tune(None, size=101 * 2**20, types=HEADLINE, outdir=out, progress=False)
    first_s = time.perf_counter() - t0
    sizes = {r.label: r.size_bytes for r in first.rows}
    runs = []
    for stock in ("Q4_K_M", "Q3_K_M"):
        for label, types in (("headline (no Q4_1/Q5_1)", HEADLINE), ("all types (Q4_1 recovers the source)", None)):
            t0 = time.perf_counter()
            d = tune(None, size=sizes[f"{stock} (imatrix)"], types=types, outdir=out, progress=False).to_dict()
            rows = {r["label"]: r for r in d["rows"]}
            tuned, ref = rows["tuned"], rows[f"{stock} (imatrix)"]
            runs.append({"stock": stock, "candidates": label, "seconds": round(time.perf_counter() - t0, 1),
                         "tuned": tuned, "stock_row": ref, "kld_ratio": tuned["kld_mean"] / ref["kld_mean"],
                         "size_ratio": tuned["size_bytes"] / ref["size_bytes"],
                         "predicted_over_measured": d["predicted_kld"] / tuned["kld_mean"],
                         "stages": d["stages"], "type_shares": d["type_shares"], "verdict": d["verdict"],
                         "calibration": d["calibration"]})
            print(f"{stock:7} {label:38} KLD {tuned['kld_mean']:.4g} vs {ref['kld_mean']:.4g} "
                  f"= {runs[-1]['kld_ratio']:.2f}x at {runs[-1]['size_ratio']:.3f}x size; "
                  f"predicted/measured {runs[-1]['predicted_over_measured']:.2f}", flush=True)
    print(f"first tune (every stage, all caches cold): {first_s:.0f} s; stages {first.stages}")
    res_dir = ROOT / "benchmarks" / "results"
    (res_dir / "tune.json").write_text(json.dumps({"model": "SmolLM2-135M-Instruct (embedded; dequantized from Q4_1)",
                                                   "first_tune_s": round(first_s, 1), "first_stages": first.stages,
                                                   "runs": runs}, indent=1) + "\n")
    lines = ["| stock recipe (imatrix) | candidates | stock KLD | tuned KLD | KLD ratio | size ratio | "
             "predicted / measured KLD |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['stock']} | {r['candidates']} | {r['stock_row']['kld_mean']:.4g} | {r['tuned']['kld_mean']:.4g} "
              f"| {r['kld_ratio']:.2f}× | {r['size_ratio']:.3f}× | {r['predicted_over_measured']:.2f} |" for r in runs]
    (res_dir / "tune.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
