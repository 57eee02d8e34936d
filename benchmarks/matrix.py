"""The full hypothesis matrix on a 0.5B-class model: how long it takes, and whether its roofline is honest.

On a random-weight model with Qwen2.5-0.5B's shape (``plan_accuracy.make_qwen``), converted
first (F32, F16, Q8_0, Q4_K_M; the issue's "conversions already made"), this runs

    edgeq bench HF -p 128 -n 64 -r 3 --batch 1 -o benchmarks/results/matrix-bench.json

(four GGUFs on llama.cpp, transformers fp32/bf16/bnb-int8/bnb-nf4, English and Hindi) and
times the whole command.  Then the independent check of the bandwidth ceiling: the pinned
``llama-bench``'s own F32 generation speed × the bytes a token reads, alternated with
``edgeq-bandwidth`` readings, is a read rate llama.cpp really reached, so the ceiling must be
at or above it; F32 decode is memory-bound, so edgeq's F32 roofline fraction should match
llama-bench's within 10%.  The VM's speed drifts, so edgeq's worker and llama-bench alternate on
the F32 file and the comparison is their ratio, against the run's ceiling.  Last, where a worker's load time goes (the GGUF header read
that used to dominate it: gguf-py's ``GGUFReader``, against edgeq's header reader).

    .venv/bin/python benchmarks/matrix.py [--json benchmarks/results/matrix.json]
    .venv/bin/python benchmarks/matrix.py --render     # the docs table again from the JSON, nothing re-run

The table also goes to ``benchmarks/results/matrix.md`` and between the ``matrix`` markers of
``docs/benchmarks/matrix.md``.
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from plan_accuracy import make_qwen  # noqa: E402
from readme_table import publish  # noqa: E402

from edgeq.benchmarking.llama_bench import llama_bench  # noqa: E402
from edgeq.benchmarking.prompts import DEFAULT_PROMPTS  # noqa: E402
from edgeq.benchmarking.results import RunSpec  # noqa: E402
from edgeq.benchmarking.runs import run_worker  # noqa: E402
from edgeq.conversion import convert  # noqa: E402
from edgeq.llamacpp import measure_bandwidth  # noqa: E402
from edgeq.sources.gguf import read  # noqa: E402
from edgeq.system import default_threads  # noqa: E402

EDGEQ = str(Path(sys.executable).with_name("edgeq"))
TARGET_S, TARGET_F32 = 600, 0.10
N_PROMPT, N_GEN, REPS = 128, 64, 3


def independent_check(f32: Path, threads: int, rounds: int) -> dict[str, Any]:
    """llama-bench's F32 tg × bytes per token, alternated with edgeq's own bench worker on the same file
    and with edgeq-bandwidth readings, so all three see the same machine speed."""
    bytes_per_token = read(f32).bytes_per_token
    spec = RunSpec("qwen", str(f32), "llama.cpp", "F32", "cpu", threads, 1, N_PROMPT, N_GEN, 1,
                   {"en": DEFAULT_PROMPTS["en"]})
    ours, lb, readings = [], [], []
    for _ in range(rounds):
        bw = measure_bandwidth(threads=threads)
        assert bw, "edgeq-bandwidth is not built"
        readings.append(float(bw["read_gbps"]))
        (row,) = run_worker(spec)
        assert row.status == "ok" and row.tg_tps, row.reason
        ours += row.tg_tps.samples
        lb += llama_bench(str(f32), threads=threads, n_prompt=N_PROMPT, n_gen=N_GEN, reps=1)[1]
    implied = [t * bytes_per_token / 1e9 for t in lb]
    m = statistics.median
    return {"llama_bench_tg_tps": [round(t, 2) for t in lb], "edgeq_tg_tps": ours,
            "implied_gbps": [round(g, 2) for g in implied], "edgeq_bandwidth_gbps": readings,
            "bytes_per_token": bytes_per_token, "max_implied_gbps": round(max(implied), 2),
            "edgeq_over_llama_bench": round(m(ours) / m(lb), 3)}


def load_anatomy(f32: Path) -> dict[str, float]:
    """Seconds to read the F32 file's header: gguf-py's GGUFReader (what the worker used before) vs edgeq's."""
    from gguf import GGUFReader

    t0 = time.perf_counter()
    GGUFReader(f32)
    old = time.perf_counter() - t0
    t0 = time.perf_counter()
    read(f32)
    return {"ggufreader_s": round(old, 3), "edgeq_header_s": round(time.perf_counter() - t0, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks/results/matrix.json")
    ap.add_argument("--check-rounds", type=int, default=3)
    ap.add_argument("--render", action="store_true", help="only the docs table again, from --json's file")
    args = ap.parse_args()
    if args.render:
        publish("matrix", render(json.loads(args.json.read_text())))
        return
    threads = default_threads()
    os.chdir(REPO)  # edgeq bench converts (or reuses) into ./models/NAME, as convert does here
    hf = make_qwen(REPO / "models/overhead/qwen2.5-0.5b-shape")
    t0 = time.perf_counter()
    conv = convert(str(hf), quants=["F32", "F16", "Q8_0", "Q4_K_M"], progress=False)
    convert_s = time.perf_counter() - t0
    f32 = next(Path(o.path) for o in conv.outputs if o.type == "F32")
    bench_json = args.json.with_name("matrix-bench.json")
    cmd = [EDGEQ, "bench", str(hf), "-p", str(N_PROMPT), "-n", str(N_GEN), "-r", str(REPS), "--batch", "1",
           "-o", str(bench_json)]
    print("$", " ".join(cmd[1:]).replace(str(REPO) + "/", ""), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    wall = time.perf_counter() - t0
    res = json.loads(bench_json.read_text())
    check = independent_check(f32, threads, args.check_rounds)
    check["ceiling_gbps"] = res["roofline"]["bandwidth"]["read_gbps"]
    anatomy = load_anatomy(f32)

    roof = res["roofline"]
    ceiling = roof["bandwidth"]["read_gbps"]
    rows = roof["rows"]
    f32_rows = [r for r in rows if r["backend"] == "llama.cpp" and r["variant"] == "F32"]
    f32_fraction = statistics.median(r["fraction"] for r in f32_rows)
    # What llama.cpp's own tool implies for the same run: its F32 speed relative to edgeq's, measured side by
    # side (so the VM's drift cancels), against the same ceiling.
    lb_fraction = f32_fraction / check["edgeq_over_llama_bench"]
    runs = res["runs"]
    ok = [r for r in runs if r["status"] == "ok"]
    out = {
        "command": "edgeq bench HF -p 128 -n 64 -r 3 --batch 1",
        "model": "random-weight Qwen2.5-0.5B shape (494M parameters, 152k vocabulary)",
        "threads": threads, "convert_s": round(convert_s, 1), "wall_s": round(wall, 1),
        "matrix_s": res["timing"]["matrix_s"], "estimated_s": res["timing"]["estimated_s"],
        "worker_loads": res["timing"]["loads"], "runs": len(runs), "runs_ok": len(ok),
        "failed": [f"{r['variant']} {r['prompt']}: {r['reason']}" for r in runs if r["status"] != "ok"],
        "load_s": {f"{r['backend']} {r['variant']}": r["load_s"] for r in ok if r["prompt"] == "en"},
        "bandwidth": roof["bandwidth"], "roofline": [{k: r[k] for k in ("backend", "variant", "prompt", "fraction",
                                                                         "read_gbps")} for r in rows],
        "max_fraction": max(r["fraction"] for r in rows), "warnings": roof["warnings"],
        "f32_fraction": round(f32_fraction, 3), "llama_bench_f32_fraction": round(lb_fraction, 3),
        "f32_fraction_vs_independent": round(f32_fraction / lb_fraction - 1, 3),
        "independent": check, "header_read": anatomy,
        "targets": {"wall_s": TARGET_S, "max_fraction": 1.0, "f32_within": TARGET_F32},
    }
    out["meets"] = {"time": wall <= TARGET_S, "no_fraction_above_1": out["max_fraction"] <= 1.0,
                    "f32_within_10pct": abs(out["f32_fraction_vs_independent"]) <= TARGET_F32,
                    # Against the readings taken beside llama-bench: this VM's speed moves by a third in minutes.
                    "ceiling_at_or_above_llama_bench": check["max_implied_gbps"] <= max(check["edgeq_bandwidth_gbps"])}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"matrix ({out['command']}, {threads} threads): {wall:.0f} s wall (target ≤ {TARGET_S}), "
             f"{out['runs_ok']}/{out['runs']} runs measured, {out['worker_loads']} worker loads "
             f"(estimate before it started: {out['estimated_s']:.0f} s)",
             f"bandwidth readings {roof['bandwidth']['readings_gbps']} GB/s → ceiling {ceiling} GB/s "
             f"(spread {roof['bandwidth']['spread']:.0%})",
             "roofline: " + ", ".join(f"{r['variant']}/{r['prompt']} {r['fraction']:.2f}" for r in rows),
             f"highest fraction {out['max_fraction']:.3f}; warnings: {roof['warnings'] or 'none'}",
             f"independent: llama-bench F32 tg {check['llama_bench_tg_tps']} tok/s × {check['bytes_per_token']/1e9:.3f} GB"
             f" = {check['implied_gbps']} GB/s; edgeq-bandwidth beside it {check['edgeq_bandwidth_gbps']} GB/s "
             f"(max implied ≤ best reading: {out['meets']['ceiling_at_or_above_llama_bench']}; the bench's own "
             f"ceiling was {ceiling})",
             f"F32 fraction: edgeq {out['f32_fraction']:.3f} vs {out['llama_bench_f32_fraction']:.3f} implied by "
             f"llama-bench (edgeq's F32 tg {check['edgeq_over_llama_bench']:.3f}× llama-bench's, alternated; "
             f"{out['f32_fraction_vs_independent']:+.1%}, target ±{TARGET_F32:.0%})",
             f"header read of the F32 file: GGUFReader {anatomy['ggufreader_s']} s, edgeq {anatomy['edgeq_header_s']} s",
             f"load seconds per worker: {out['load_s']}"]
    if out["failed"]:
        lines.append(f"failed: {out['failed']}")
    text = "\n".join(lines) + "\n"
    args.json.with_suffix(".txt").write_text(text)
    print(text, end="")
    publish("matrix", render(out))


def render(out: dict[str, Any]) -> str:
    """The docs table from the JSON: each figure of the run beside its target."""
    t, ind = out["targets"], out["independent"]
    top = max(out["roofline"], key=lambda r: r["fraction"])
    loads = out["load_s"]
    gguf = [v for k, v in loads.items() if k.startswith("llama.cpp")]
    hf = [v for k, v in loads.items() if not k.startswith("llama.cpp")]
    rows = [
        ("command", f"`{out['command']}`, {out['threads']} threads", "—"),
        ("whole command, wall", f"**{out['wall_s']:.0f} s**", f"≤ {t['wall_s']} s"),
        ("runs measured", f"{out['runs_ok']} / {out['runs']}", "all"),
        ("worker loads", str(out["worker_loads"]), "—"),
        ("load per worker", f"GGUF {min(gguf):.1f}–{max(gguf):.1f} s, transformers {min(hf):.1f}–{max(hf):.1f} s", "—"),
        ("ETA printed before it started", f"{out['estimated_s']:.0f} s", "—"),
        ("bandwidth readings (before round 1, after each round)",
         ", ".join(f"{x}" for x in out["bandwidth"]["readings_gbps"]) + " GB/s", "—"),
        ("highest roofline fraction", f"{out['max_fraction']:.2f} ({top['variant']}, {top['prompt']})",
         f"≤ {t['max_fraction']:g}"),
        ("F32 fraction: edgeq vs what llama-bench implies",
         f"{out['f32_fraction']:.3f} vs {out['llama_bench_f32_fraction']:.3f} "
         f"({out['f32_fraction_vs_independent']:+.1%})".replace("-", "−"), f"±{t['f32_within']:.0%}"),
        ("llama-bench F32 tg × bytes per token", f"{min(ind['implied_gbps'])}–{max(ind['implied_gbps'])} GB/s, "
         f"edgeq-bandwidth beside it {min(ind['edgeq_bandwidth_gbps'])}–{max(ind['edgeq_bandwidth_gbps'])} GB/s",
         "implied ≤ a reading"),
        ("header read of the F32 file", f"GGUFReader {out['header_read']['ggufreader_s']} s, edgeq "
         f"{out['header_read']['edgeq_header_s']} s", "—"),
        ("warnings", "; ".join(out["warnings"]) or "none", "—"),
    ]
    return "\n".join(["| | this run | target |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows])


if __name__ == "__main__":
    main()
