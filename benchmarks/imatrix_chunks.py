"""How many chunks of calibration text the importance matrix needs: Q4_K_M's KLD and the matrix's time per count.

    .venv/bin/python benchmarks/imatrix_chunks.py [--chunks 64,32,16] [--out DIR]

On the benchmarks' Qwen2.5-0.5B-class model (``benchmarks/qwen05b.py``; dequantized from a Q4_K_M file, so its
floats lie on that file's grids): its F16 file, one importance matrix per chunk count (512 tokens each, of the
default calibration text), a Q4_K_M file from each, and every file's KLD against the F16 file on eval's text
(8,192 tokens, one pass for all).  Writes ``benchmarks/results/imatrix-chunks.{json,md}``: the numbers behind
``config.DEFAULT_IMATRIX_CHUNKS``.
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

from edgeq import convert  # noqa: E402
from edgeq.conversion.steps import calibration_text  # noqa: E402
from edgeq.llamacpp import find_toolchain  # noqa: E402
from edgeq.llamacpp.quantize import compute_imatrix, quantize  # noqa: E402
from edgeq.quality import default_text, perplexity  # noqa: E402
from edgeq.quality.models import gguf_ref  # noqa: E402
from edgeq.quants import parse_quant  # noqa: E402
from edgeq.system import system_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", default="64,32,16")
    ap.add_argument("--out", default=str(ROOT / "models" / "bench-imatrix"))
    args = ap.parse_args()
    out = Path(args.out)
    tc = find_toolchain()
    f16 = Path(next(o.path for o in convert(str(qwen05b.ensure()), quants=["F16"], outdir=out, progress=False).outputs
                    if o.type == "F16"))
    rows = []
    for n in [int(c) for c in args.chunks.split(",")]:
        im, q = out / f"imatrix-{n}.gguf", out / f"Q4_K_M-imatrix-{n}.gguf"
        t = time.perf_counter()
        compute_imatrix(tc, f16, calibration_text(None), im, chunks=n)
        seconds = time.perf_counter() - t
        quantize(tc, f16, q, parse_quant("Q4_K_M"), extra_args=["--imatrix", str(im)])
        rows.append({"chunks": n, "imatrix_seconds": round(seconds, 1), "file": q.name})
    text, src = default_text()
    ref = gguf_ref(f16)
    res = perplexity([ref, *[gguf_ref(out / r["file"]) for r in rows]], text, src, reference=ref, ctx=512,
                     max_tokens=8192, threads=system_info().physical_cores)
    for r, e in zip(rows, res.rows[1:]):
        r.update(kld_mean=e.kld_mean, kld_stderr=e.kld_stderr, top1_pct=e.top1_pct, tokens_scored=e.tokens_scored)
    data = {"model": f"{qwen05b.NAME} (dequantized from Q4_K_M)", "cpu": system_info().cpu,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    (ROOT / "benchmarks" / "results" / "imatrix-chunks.json").write_text(json.dumps(data, indent=1))
    lines = [f"{data['model']}, {data['cpu']}, {data['date']}", "",
             "| chunks (× 512 tokens) | imatrix s | Q4_K_M KLD ± stderr | top-1 % |", "|---|---|---|---|"]
    lines += [f"| {r['chunks']} | {r['imatrix_seconds']:.0f} | {r['kld_mean']:.6f} ± {r['kld_stderr']:.6f} | "
              f"{r['top1_pct']:.2f} |" for r in rows]
    publish("imatrix-chunks", "\n".join(lines))


if __name__ == "__main__":
    main()
