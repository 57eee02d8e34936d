"""The decisions benchmark (issue 33): edgeq's pick against the oracle's, under the default rule, on this machine.

    .venv/bin/python benchmarks/decisions.py [--models embedded,qwen] [--rounds 5] [--out DIR]
    .venv/bin/python benchmarks/decisions.py --render     # the tables again from the JSON, nothing re-run

For each model: `ship` for this machine in a work folder of its own (every candidate made, its KLD against the
F16 file measured on the evaluation text, its speed measured by bench: the measured pick).  Then every candidate
again with llama-bench, every file once a round, ``--rounds`` rounds in alternating order (the oracle's figures,
independent of ship's own).  Three picks under the default rule (``plan.objective``: the fastest within KLD
0.01, measured KLD):

- the oracle's, from the llama-bench figures;
- edgeq's from measurements (ship's pick);
- edgeq's from predictions: the uncalibrated plan of each file for this machine, with ship's measured KLD.

Regret = 1 − (the oracle's tg of edgeq's pick ÷ the oracle's tg of the oracle's pick): the speed lost at the
same quality bound.  Target ≤ 5%.  Writes ``benchmarks/results/decisions.{json,md}`` and the tables in
``docs/benchmarks/decisions.md`` (between its ``decisions`` markers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from readme_table import publish  # noqa: E402

from edgeq.planning import plan  # noqa: E402
from edgeq.planning.objective import NEAR_LOSSLESS_KLD  # noqa: E402
from edgeq.planning.recommend import Candidate, recommend  # noqa: E402
from edgeq.planning.source import from_gguf  # noqa: E402
from edgeq.shipping import ship  # noqa: E402
from edgeq.sources.embedded import ensure_embedded_model  # noqa: E402
from edgeq.system import system_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BIN = ROOT / "build" / "bin"
TARGET_REGRET = 0.05


def _llama_bench(path: str, threads: int, args: list[str]) -> float:
    out = subprocess.run([str(BIN / "llama-bench"), "-m", path, "-t", str(threads), "-r", "1", "-o", "json", *args],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def oracle_speeds(files: dict[str, str], rounds: int, threads: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {k: {"pp": [], "tg": []} for k in files}
    order = list(files)
    for r in range(rounds):
        for k in order if r % 2 == 0 else order[::-1]:
            out[k]["pp"].append(_llama_bench(files[k], threads, ["-p", "128", "-n", "0"]))
            out[k]["tg"].append(_llama_bench(files[k], threads, ["-p", "0", "-n", "64"]))
    return out


def _cand(label: str, kld: float | None, tg: float, pp: float | None, lo: float | None = None,
          hi: float | None = None, pp_lo: float | None = None, pp_hi: float | None = None) -> Candidate:
    return Candidate("", label, 1, 0, 1, tg, kld, pp, lo, hi, pp_lo, pp_hi)


def run_model(key: str, out: Path, rounds: int, threads: int) -> dict[str, object]:
    folder = ensure_embedded_model(ROOT / "models") if key == "embedded" else _qwen()
    work, dist = out / key / "work", out / key / "dist"
    t0 = time.perf_counter()
    res = ship(None if key == "embedded" else str(folder), workdir=work, outdir=dist, progress=False, force=True,
               threads=threads)
    ship_s = time.perf_counter() - t0
    kld = {o.label: (0.0 if o.label == "F16" else o.kld_mean) for o in res.options}
    files = {o.label: o.file for o in res.options}
    sp = oracle_speeds(files, rounds, threads)
    med = {k: (statistics.median(v["tg"]), statistics.median(v["pp"])) for k, v in sp.items()}
    oracle = recommend([_cand(k, kld[k], med[k][0], med[k][1], min(sp[k]["tg"]), max(sp[k]["tg"]),
                              min(sp[k]["pp"]), max(sp[k]["pp"])) for k in files])
    with tempfile.TemporaryDirectory() as empty:  # no ./edgeq-bench.json to calibrate from: the plan alone
        here = os.getcwd()
        os.chdir(empty)
        try:
            pred = {}
            for k, f in files.items():
                spec = from_gguf(Path(f))
                pred[k] = plan(f, quants=[] if spec.recipes else list(spec.files), fit_params=False).rows[0]
        finally:
            os.chdir(here)
    predicted = recommend([_cand(k, kld[k], pred[k].tg_tps, pred[k].pp_tps) for k in files])

    def regret(pick: str | None) -> float | None:
        return None if pick is None or oracle.quant is None else round(1 - med[pick][0] / med[oracle.quant][0], 4)

    return {"ship_seconds": round(ship_s, 1), "ship_stages": res.stages, "busy": res.busy, "threads": threads,
            "rounds": rounds, "kld_bound": NEAR_LOSSLESS_KLD,
            "candidates": {k: {"kld": kld[k], "tg_oracle": sp[k]["tg"], "pp_oracle": sp[k]["pp"],
                               "tg_ship": next(o.tg_tps_here for o in res.options if o.label == k),
                               "tg_ship_range": next([o.tg_low_target, o.tg_high_target] for o in res.options
                                                     if o.label == k),
                               "tg_predicted": pred[k].tg_tps, "pp_predicted": pred[k].pp_tps} for k in files},
            "oracle_pick": oracle.quant, "oracle_sentence": oracle.sentence,
            "measured_pick": res.chosen, "measured_sentence": res.sentence, "measured_regret": regret(res.chosen),
            "predicted_pick": predicted.quant, "predicted_sentence": predicted.sentence,
            "predicted_regret": regret(predicted.quant)}


def _qwen() -> Path:
    import qwen05b

    return qwen05b.ensure()


def _regret(m: dict, which: str) -> str:
    """The regret on medians, and whether the two picks' oracle samples overlap (then the loss is within noise)."""
    r, pick, best = m[f"{which}_regret"], m[f"{which}_pick"], m["oracle_pick"]
    if pick is None or best is None or pick == best:
        return f"{r:.1%}" if r is not None else "—"
    a, b = m["candidates"][pick]["tg_oracle"], m["candidates"][best]["tg_oracle"]
    overlap = max(a) >= min(b) and max(b) >= min(a)
    return f"{r:.1%}{', within noise' if overlap else ''}"


def render(data: dict[str, object]) -> str:
    lines = ["| model | candidate | KLD | tg oracle, median (min–max) | pp oracle | tg ship (min–max) | tg predicted |",
             "|---|---|---|---|---|---|---|"]
    summary = ["| model | oracle's pick | edgeq, measured (regret) | edgeq, predicted (regret) | ship s | busy |",
               "|---|---|---|---|---|---|"]
    for key, m in data["models"].items():  # type: ignore[attr-defined]
        for k, c in m["candidates"].items():
            tg, pp = c["tg_oracle"], c["pp_oracle"]
            lines.append(f"| {key} | {k} | {c['kld']:.4f} | {statistics.median(tg):.1f} ({min(tg):.1f}–{max(tg):.1f}) "
                         f"| {statistics.median(pp):.0f} | {c['tg_ship']:.1f} ({c['tg_ship_range'][0]:.1f}–"
                         f"{c['tg_ship_range'][1]:.1f}) | {c['tg_predicted']:.1f} |")
        summary.append(f"| {key} | {m['oracle_pick']} | {m['measured_pick']} ({_regret(m, 'measured')}) | "
                       f"{m['predicted_pick']} ({_regret(m, 'predicted')}) | {m['ship_seconds']:.0f} | "
                       f"{'yes' if m['busy'] else 'no'} |")
    return "\n".join(summary + [""] + lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="embedded")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "models" / "bench-decisions"))
    # One thread by default: on this shared 2-core VM a second thread spin-waits whenever another process holds
    # the other core, and generation collapses (benchmarks/type_speed.py); the ranking is what the picks compare.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--render", action="store_true", help="only the tables again, from the JSON")
    args = ap.parse_args()
    path = RESULTS / "decisions.json"
    data = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    if args.render:
        publish("decisions", render(data).rstrip("\n"))
        return
    data["cpu"] = system_info().cpu
    data["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for key in args.models.split(","):
        data["models"][key] = run_model(key, Path(args.out).resolve(), args.rounds, args.threads or system_info().physical_cores)
        path.write_text(json.dumps(data, indent=1))
        print(json.dumps({k: v for k, v in data["models"][key].items() if k != "candidates"}, indent=1), flush=True)
    publish("decisions", render(data).rstrip("\n"))


if __name__ == "__main__":
    main()
