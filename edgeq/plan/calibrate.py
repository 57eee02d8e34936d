"""Fit the roofline efficiencies and the runtime overhead to `edgeq bench` results (schema edgeq-bench/…).

Generation: each llama.cpp run at batch 1 gives a bandwidth efficiency (tg tok/s ×
bytes per token ÷ bandwidth) and a matrix-vector rate (tg tok/s × weights per
token); the pair of candidates that best predicts all runs through
``speed.tg_tps`` (least squared log error) is kept, so a small model whose
quantized runs are arithmetic-bound does not drag the bandwidth efficiency down.
Prompts: the median achieved FLOP/s.  Overhead: the median of measured peak RSS −
(weights + repacked + KV cache + compute) predicted for that run's context.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import read_results
from . import memory
from .size import tensor_bytes
from .source import from_gguf
from .speed import bytes_per_token, matmul_flops_per_token, matmul_weights, tg_tps


@dataclass
class Calibration:
    source: str  # the results file
    machine: str  # the CPU the results were measured on
    date: str | None
    runs: int
    bandwidth_gbps: float
    tg_efficiency: float
    matvec_gweights: float | None  # weights per second the CPU multiplies in generation (None: not limiting)
    pp_gflops: float | None  # achieved in prompt processing
    overhead_bytes: int
    samples: list[dict[str, float]] = field(default_factory=list)


def _load(path: Path) -> dict[str, Any]:
    return read_results(path, "bench")


def _bench_ctx(run: dict[str, Any]) -> int:
    """The context bench's worker creates (edgeq/bench/worker.py): tokens needed, rounded up to 256."""
    need = run["batch"] * (run["n_prompt"] + run["n_gen"] + 1)
    return -(-need // 256) * 256


def _run_terms(run: dict[str, Any], repack_types: list[str]) -> tuple[int, int, int, float]:
    """(bytes per token, weights per token, resident bytes before overhead, FLOP per token) of one bench run."""
    path = Path(run["path"])
    if path.is_file():
        spec = from_gguf(path)
        sizes = [tensor_bytes(t.shape, ty) for t, ty in zip(spec.tensors, spec.current_types)]
        repacked = sum(b for b, ty in zip(sizes, spec.current_types) if ty in repack_types)
        ctx = _bench_ctx(run)
        mem = memory.estimate(spec, path.stat().st_size, ctx=ctx, repacked_bytes=repacked, overhead_bytes=0)
        return (bytes_per_token(spec, sizes, fill_tokens=run["n_prompt"]), matmul_weights(spec), mem.total_bytes,
                matmul_flops_per_token(spec, fill_tokens=run["n_prompt"]))
    # The GGUF is gone: fall back to the totals the run recorded.
    weights = int(run.get("weight_bytes") or run.get("file_size_bytes") or 0)
    n = int(run.get("n_params") or 0)
    return weights, n, int(run.get("file_size_bytes") or weights), 2.0 * n


def fit_generation(points: list[tuple[int, int, float]], bandwidth_gbps: float) -> tuple[float, float | None]:
    """(efficiency, matvec G weights/s) best predicting measured (bytes/token, weights/token, tok/s) points."""
    effs = [tps * bpt / (bandwidth_gbps * 1e9) for bpt, _, tps in points]
    rates: list[float | None] = [None] + [tps * w / 1e9 for _, w, tps in points]

    def error(eff: float, rate: float | None) -> float:
        return sum(math.log(tg_tps(bpt, w, bandwidth_gbps=bandwidth_gbps, tg_efficiency=eff,
                                   matvec_gweights=rate)[0] / tps) ** 2 for bpt, w, tps in points)

    return min(((e, r) for e in effs for r in rates), key=lambda er: error(*er))


def from_bench(path: Path, *, repack_types: list[str]) -> Calibration:
    """A Calibration from one bench results file; UsageError when it has no usable llama.cpp run."""
    data = _load(path)
    bw = float(((data.get("roofline") or {}).get("bandwidth") or {}).get("read_gbps") or 0)
    if bw <= 0:
        raise UsageError(f"{path} records no memory bandwidth, so the roofline cannot be calibrated.",
                         hint="Re-run `edgeq bench` with the edgeq-bandwidth tool built.")
    runs = [r for r in data.get("runs", []) if r.get("backend") == "llama.cpp" and r.get("status") == "ok"
            and r.get("batch") == 1 and r.get("tg_tps")]
    if not runs:
        raise UsageError(f"{path} has no finished llama.cpp run at batch 1 to calibrate from.",
                         hint="Run `edgeq bench` on a GGUF (batch 1 is in the default matrix).")
    samples, points = [], []
    for r in runs:
        bpt, weights, resident, flops = _run_terms(r, repack_types)
        points.append((bpt, weights, r["tg_tps"]["median"]))
        s = {"tg_tps": r["tg_tps"]["median"], "bytes_per_token": bpt}
        if r.get("pp_tps") and flops:
            s["pp_gflops"] = r["pp_tps"]["median"] * flops / 1e9
        if r.get("peak_rss_bytes"):
            s["overhead_bytes"] = r["peak_rss_bytes"] - resident
        samples.append(s)

    def med(key: str) -> float | None:
        xs = [s[key] for s in samples if key in s]
        return statistics.median(xs) if xs else None

    env = data.get("environment") or {}
    eff, rate = fit_generation(points, bw)
    return Calibration(source=str(path), machine=str(env.get("cpu", "?")), date=env.get("date"), runs=len(runs),
                       bandwidth_gbps=bw, tg_efficiency=round(eff, 4), matvec_gweights=round(rate, 2) if rate else None,
                       pp_gflops=round(med("pp_gflops"), 1) if med("pp_gflops") else None,
                       overhead_bytes=int(med("overhead_bytes") or memory.DEFAULT_OVERHEAD_BYTES), samples=samples)
