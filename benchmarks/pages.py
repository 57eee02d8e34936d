"""What numpy's transparent huge pages cost edgeq: three of its numpy-heavy jobs with them and without.

numpy asks the kernel for huge pages (madvise) for every array of 4 MiB or more, unless the environment says
``NUMPY_MADVISE_HUGEPAGE=0``; since this benchmark edgeq says so itself (``edgeq.system.use_small_pages``).
Each job runs in a fresh process with the variable at 1 (numpy's default) and at 0, the two alternating in
rounds (the order flips each round: this VM drifts ±20-40% within minutes, so only side-by-side ratios mean
anything).  Whole-process wall time and the process's system time are kept.

* convert: ``edgeq.convert`` of the model to F16 (the vendored converter: numpy copies of every tensor);
* score: ``edgeq.quality.perplexity`` of the Q8_0 file against the F16 one, 4 windows of 512 (a window's
  log-probabilities are a vocabulary wide);
* errors: ``edgeq tune``'s error of every tensor of the Q4_0 file against the F16 one, weighted by the
  importance matrix (gguf-py dequantizes each tensor).

    .venv/bin/python benchmarks/pages.py [--model HF_FOLDER] [--rounds 3]

Writes ``benchmarks/results/pages.{json,md}`` and the table in ``docs/benchmarks/pages.md`` between ``<!-- pages:begin/end -->``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme_table import publish  # noqa: E402

import edgeq  # noqa: E402
from edgeq.conversion.steps import ensure_imatrix  # noqa: E402
from edgeq.llamacpp import find_toolchain  # noqa: E402
from edgeq.sources.texts import calibration_text_file  # noqa: E402
from edgeq.system import cpu_name  # noqa: E402

JOBS = {
    "convert": "import edgeq; edgeq.convert({src!r}, quants=['F16'], outdir={out!r}, progress=False, force=True)",
    "score": ("from pathlib import Path; from edgeq.quality import perplexity; from edgeq.quality.models import gguf_ref;"
              "from edgeq.sources.texts import default_text; t, s = default_text(); r = gguf_ref(Path({f16!r}));"
              "perplexity([r, gguf_ref(Path({q8!r}))], t, s, reference=r, ctx=512, max_tokens=2048, threads=2)"),
    "errors": ("from pathlib import Path; from edgeq.tuning.sensitivity import tensor_errors;"
               "tensor_errors(Path({f16!r}), Path({q4!r}), 'imatrix', Path({imat!r}))"),
}


def run(code: str, hugepage: str) -> tuple[float, float]:
    """(wall seconds, system seconds) of ``python -c code`` with NUMPY_MADVISE_HUGEPAGE=hugepage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "NUMPY_MADVISE_HUGEPAGE": hugepage, "EDGEQ_NO_PROGRESS": "1"})
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{code[:60]}… failed: {out.stderr[-1500:]}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="an HF folder (default: the embedded SmolLM2-135M)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeq-pages-"))
    res = edgeq.convert(args.model, quants=["F16", "Q8_0", "Q4_0"], outdir=work / "files", progress=False)
    paths = {o.type: o.path for o in res.outputs}
    f16 = Path(paths["F16"])
    imat = ensure_imatrix(find_toolchain(), f16, calibration_text_file(), Path(res.outdir), f16.stem, "pages", 4,
                          None, False)
    fill = {"src": args.model, "out": str(work / "convert"), "f16": str(f16), "q8": paths["Q8_0"],
            "q4": paths["Q4_0"], "imat": str(imat)}
    times: dict[str, dict[str, list[tuple[float, float]]]] = {j: {"1": [], "0": []} for j in JOBS}
    for r in range(args.rounds):
        for job, code in JOBS.items():
            for hp in ("1", "0") if r % 2 == 0 else ("0", "1"):
                times[job][hp].append(run(code.format(**fill), hp))
                print(f"round {r + 1} {job} hugepage={hp}: {times[job][hp][-1][0]:.1f} s", flush=True)
    rows = []
    for job, by in times.items():
        on, off = (statistics.median(w for w, _ in by[hp]) for hp in ("1", "0"))
        son, soff = (statistics.median(s for _, s in by[hp]) for hp in ("1", "0"))
        rows.append({"job": job, "huge_s": round(on, 2), "small_s": round(off, 2), "ratio": round(on / off, 2),
                     "huge_sys_s": round(son, 2), "small_sys_s": round(soff, 2)})
    thp = {k: _thp(k) for k in ("enabled", "defrag")}
    name = str(res.source.get("name") or f16.name[: -len("-F16.gguf")])
    data = {"model": name, "rounds": args.rounds, "cpu": cpu_name(), "thp": thp, "rows": rows}
    (ROOT / "benchmarks" / "results" / "pages.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"{name}, {args.rounds} rounds (medians), {data['cpu']}, THP enabled `{thp['enabled']}`, "
             f"defrag `{thp['defrag']}`:", "",
             "| job | huge pages (numpy's default) | 4 KiB pages (edgeq's) | ratio | system time, huge → small |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['job']} | {r['huge_s']:.1f} s | {r['small_s']:.1f} s | **{r['ratio']:.2f}×** | "
                     f"{r['huge_sys_s']:.1f} s → {r['small_sys_s']:.1f} s |")
    publish("pages", "\n".join(lines))


def _thp(name: str) -> str:
    try:
        text = Path(f"/sys/kernel/mm/transparent_hugepage/{name}").read_text()
    except OSError:
        return "n/a"
    return next((w[1:-1] for w in text.split() if w.startswith("[")), text.strip())


if __name__ == "__main__":
    main()
