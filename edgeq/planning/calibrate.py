"""Fit the roofline efficiencies and the runtime overhead to `edgeq bench` results (schema edgeq-bench/…).

Generation: every llama.cpp run at batch 1 gives one equation of ``speed.tg_tps``'s
model, seconds per token = overhead + Σ_family bytes ÷ (bandwidth × efficiency), linear
in the overhead and in each family's seconds per byte; ``fit_families`` solves them by
non-negative least squares on relative error.  Prompts: the median achieved FLOP/s.  Overhead: the median of measured peak RSS −
(weights + repacked + KV cache + compute) predicted for that run's context.
"""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import read_results
from . import memory
from .size import tensor_bytes
from .source import from_gguf
from .speed import (
    FAMILIES,
    attention_flops,
    effective_bytes,
    effective_flops,
    family,
    family_bytes,
    matmul_flops_per_token,
    matmul_weights,
    tg_tps,
    type_bytes,
    weights_by_type,
)


@dataclass
class Calibration:
    source: str  # the results file
    machine: str  # the CPU the results were measured on
    date: str | None
    runs: int
    bandwidth_gbps: float
    tg_efficiency: float  # pooled over all runs: used for a kernel family the runs did not cover
    tg_family_efficiency: dict[str, float]  # per kernel family (speed.FAMILIES) the runs covered
    tg_overhead_ms: float  # fixed cost per generated token (0 unless the runs span model sizes)
    tg_model_weights: list[int]  # matmul weights of the models the runs used, each once
    pp_gflops: float | None  # achieved in prompt processing
    overhead_bytes: int
    samples: list[dict[str, Any]] = field(default_factory=list)  # per run: label, measured and predicted-back tg
    warnings: list[str] = field(default_factory=list)  # inputs that were incomplete


def _load(path: Path) -> dict[str, Any]:
    return read_results(path, "bench")


def _bench_ctx(run: dict[str, Any]) -> int:
    """The context bench's worker creates (edgeq/bench/worker.py): tokens needed, rounded up to 256."""
    need = run["batch"] * (run["n_prompt"] + run["n_gen"] + 1)
    return -(-need // 256) * 256


def terms_of_file(path: Path, *, batch: int, n_prompt: int, n_gen: int, repack_types: list[str]) -> dict[str, Any]:
    """What calibration needs of one benched file, from its header: recorded by ``edgeq bench`` with each run,
    so results calibrate as well on another machine, in another folder, or after the GGUF is gone."""
    spec = from_gguf(path)
    sizes = [tensor_bytes(t.shape, ty) for t, ty in zip(spec.tensors, spec.current_types)]
    repacked = sum(b for b, ty in zip(sizes, spec.current_types) if ty in repack_types)
    ctx = _bench_ctx({"batch": batch, "n_prompt": n_prompt, "n_gen": n_gen})
    mem = memory.estimate(spec, path.stat().st_size, ctx=ctx, repacked_bytes=repacked, overhead_bytes=0)
    return {"bytes_by_family": family_bytes(spec, spec.current_types, sizes, fill_tokens=n_prompt),
            "bytes_by_type": type_bytes(spec, spec.current_types, sizes, fill_tokens=n_prompt),
            "weights_by_type": weights_by_type(spec, spec.current_types),
            "attention_flops": attention_flops(spec, fill_tokens=n_prompt),
            "matmul_weights": matmul_weights(spec), "resident_bytes": mem.total_bytes,
            "flops_per_token": matmul_flops_per_token(spec, fill_tokens=n_prompt), "ctx": ctx, "fill_tokens": n_prompt,
            "repack_types": sorted(repack_types)}


def _run_terms(run: dict[str, Any], repack_types: list[str], warnings: list[str],
               kind: str | None = None) -> tuple[dict[str, int], int, int, float]:
    """(bytes per token by family, weights per token, resident bytes before overhead, FLOP per token) of a run:
    as bench recorded them, else from the file if it is still here, else a rough fallback that is warned of.
    Recorded per type (bench since issue 33), bytes and FLOP count at each type's speed relative to Q4_0 on
    ``kind`` (``speed.effective_bytes``); older records count them as they are."""
    t = run.get("calibration")
    path = Path(run["path"])
    if not t and path.is_file():
        t = terms_of_file(path, batch=run["batch"], n_prompt=run["n_prompt"], n_gen=run["n_gen"],
                          repack_types=repack_types)
    if t and t.get("bytes_by_type"):
        fam = effective_bytes({k: int(v) for k, v in t["bytes_by_type"].items()}, kind)
        flops = effective_flops({k: int(v) for k, v in t["weights_by_type"].items()}, float(t["attention_flops"]), kind)
        return fam, int(t["matmul_weights"]), int(t["resident_bytes"]), flops
    if t:
        fam = {f: int(t["bytes_by_family"].get(f, 0)) for f in FAMILIES}
        return fam, int(t["matmul_weights"]), int(t["resident_bytes"]), float(t["flops_per_token"])
    # An older results file whose GGUF is gone: totals only, under the family its name says.
    warnings.append(f"{path.name}: the results predate recorded calibration terms and the file is not here, so its "
                    "bytes per token are a rough total (all weights, one kernel family, no KV cache); re-run "
                    "`edgeq bench` for an exact calibration.")
    weights = int(run.get("weight_bytes") or run.get("file_size_bytes") or 0)
    n = int(run.get("n_params") or 0)
    fam = dict.fromkeys(FAMILIES, 0)
    fam[_family_from_name(path.name)] = weights
    return fam, n, int(run.get("file_size_bytes") or weights), 2.0 * n


def _family_from_name(name: str) -> str:
    for ty in ("BF16", "F16", "F32", "Q8_0", "Q4_0"):
        if ty.lower() in name.lower():
            return family(ty)
    return "K"


MIN_FAMILY_SHARE = 0.05  # a family under this share of every run's bytes is not fitted (its rate would be noise)
MIN_SIZE_SPREAD = 1.5  # the overhead is fitted only when the runs' models differ at least this much in weights


@dataclass
class GenerationFit:
    efficiency: float  # pooled: all runs' bytes ÷ (bandwidth × their time less the overhead)
    family_efficiency: dict[str, float]
    overhead_s: float


def fit_families(points: list[tuple[dict[str, int], int, float]], bandwidth_gbps: float,
                 spreads: list[float] | None = None) -> GenerationFit:
    """Efficiency per kernel family and per-token overhead best predicting (bytes by family, weights, tok/s) runs.

    Seconds per token t = c + Σ_f B_f·s_f is linear in the overhead c and each family's
    seconds per byte s_f; the non-negative least-squares solution on relative error
    (every subset of unknowns tried; there are at most six) is kept, and
    efficiency_f = 1 ÷ (s_f × bandwidth).  The overhead is an unknown only when the
    runs span model sizes: within one model it cannot be told apart from the
    families' rates, so it is 0 there.  A family below ``MIN_FAMILY_SHARE`` in every
    run, or one the solution zeroes, gets no efficiency of its own: ``speed.tg_tps``
    then treats it as a family the runs did not cover.  With ``spreads`` (each run's relative half-spread over its
    repetitions), a family whose own efficiency differs from the pooled one by no more than the spread of the runs
    it dominates runs at the pooled one: one noisy run would otherwise set a whole family's rate (a run's median
    moves up to 12% between quiet runs on a VM, and the kernel table already carries the types' measured ratios).
    """
    import numpy as np

    bw = bandwidth_gbps * 1e9
    t = np.array([1.0 / tps for _, _, tps in points])
    fams = [f for f in FAMILIES
            if any(fb[f] >= MIN_FAMILY_SHARE * sum(fb.values()) for fb, _, _ in points)]
    cols = [np.array([float(fb[f]) for fb, _, _ in points]) for f in fams]
    names: list[str | None] = list(fams)
    weights = [w for _, w, _ in points if w]
    if weights and max(weights) >= MIN_SIZE_SPREAD * min(weights):
        cols.append(np.ones(len(points)))
        names.append(None)  # the overhead
    a = np.stack(cols, axis=1) / t[:, None]  # rows divided by the measured time: relative error
    best: tuple[float, dict[str | None, float]] | None = None
    for k in range(1, len(names) + 1):
        for subset in itertools.combinations(range(len(names)), k):
            sub = a[:, subset]
            if len(points) < k or np.linalg.matrix_rank(sub) < k:
                continue
            coef = np.linalg.lstsq(sub, np.ones(len(points)), rcond=None)[0]
            if (coef <= 0).any():
                continue
            err = float(np.sum((sub @ coef - 1) ** 2))
            if best is None or err < best[0]:
                best = (err, {names[i]: float(c) for i, c in zip(subset, coef)})
    sol = best[1] if best else {}
    overhead = sol.pop(None, 0.0)
    total_bytes = sum(sum(fb.values()) for fb, _, _ in points)
    busy = max(float(np.sum(t)) - overhead * len(points), 1e-9)
    pooled = total_bytes / (bw * busy)
    fam_eff = {f: 1.0 / (s * bw) for f, s in sol.items() if f is not None}
    if spreads is not None:
        # Within its runs' noise a family runs at the pooled level (not at the fallback of a family no run covered).
        fam_eff = {f: e if abs(e / pooled - 1) > _family_noise(f, points, spreads) else pooled
                   for f, e in fam_eff.items()}
    return GenerationFit(efficiency=pooled, family_efficiency=fam_eff, overhead_s=overhead)


def _family_noise(fam: str, points: list[tuple[dict[str, int], int, float]], spreads: list[float]) -> float:
    """The largest relative half-spread among the runs whose bytes are mostly ``fam``'s (0 when none are)."""
    return max((sp for (fb, _, _), sp in zip(points, spreads) if max(fb, key=lambda f: fb[f]) == fam), default=0.0)


def half_spread(stat: dict[str, Any]) -> float:
    """A bench figure's (max − min) ÷ 2 ÷ median: 0 when only the median was recorded."""
    lo, hi, med = stat.get("min"), stat.get("max"), stat.get("median")
    return (hi - lo) / 2 / med if lo is not None and hi is not None and med else 0.0


def from_bench(path: Path, *, repack_types: list[str], kind: str | None = None) -> Calibration:
    """A Calibration from one bench results file; UsageError when it has no usable llama.cpp run.  ``kind``: the
    target's (``kernels.KINDS``), whose per-type factors the fit keeps."""
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
    samples: list[dict[str, Any]] = []
    points: list[tuple[dict[str, int], int, float]] = []
    warnings: list[str] = []
    for r in runs:
        fam, weights, resident, flops = _run_terms(r, repack_types, warnings, kind)
        points.append((fam, weights, r["tg_tps"]["median"]))
        s: dict[str, Any] = {"run": f"{r.get('model', '?')} {r.get('variant', '?')} ({r.get('prompt', '?')})",
                             "tg_tps": r["tg_tps"]["median"], "bytes_per_token": sum(fam.values()),
                             **{f"bytes_{f}": b for f, b in fam.items() if b}}
        if r.get("pp_tps") and flops:
            s["pp_gflops"] = r["pp_tps"]["median"] * flops / 1e9
        if r.get("peak_rss_bytes"):
            s["overhead_bytes"] = r["peak_rss_bytes"] - resident
        samples.append(s)

    def med(key: str) -> float | None:
        xs = [s[key] for s in samples if key in s]
        return statistics.median(xs) if xs else None

    if data.get("busy"):  # bench said so while it measured: a calibration from those runs carries the noise
        warnings.append(f"{path.name}: {data['busy']} A calibration from it can miss by that much; bench again on "
                        "a quiet machine.")
    env = data.get("environment") or {}
    fit = fit_families(points, bw, spreads=[half_spread(r["tg_tps"]) for r in runs])
    for smp, (fam, _, _) in zip(samples, points):  # each run predicted back: the calibration's own check
        if not any(fam.values()):
            continue
        smp["predicted_tg_tps"] = round(tg_tps(fam, bandwidth_gbps=bw, efficiency=fit.efficiency,
                                               family_efficiency=fit.family_efficiency,
                                               overhead_s=fit.overhead_s)[0], 2)
    return Calibration(source=str(path), machine=str(env.get("cpu", "?")), date=env.get("date"), runs=len(runs),
                       bandwidth_gbps=bw, tg_efficiency=round(fit.efficiency, 4),
                       tg_family_efficiency={f: round(e, 4) for f, e in fit.family_efficiency.items()},
                       tg_overhead_ms=round(fit.overhead_s * 1e3, 3),
                       tg_model_weights=sorted({w for _, w, _ in points if w}),
                       pp_gflops=round(pp, 1) if (pp := med("pp_gflops")) else None,
                       overhead_bytes=int(med("overhead_bytes") or memory.DEFAULT_OVERHEAD_BYTES), samples=samples,
                       warnings=list(dict.fromkeys(warnings)))
