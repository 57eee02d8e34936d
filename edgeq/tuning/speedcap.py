"""tune weighs speed: a tuned file no slower, in prompts and generation, than the stock recipe of its size.

Bytes do not predict speed (issue 33): the 0.5B file tuned for KLD alone, mostly Q5_1/Q4_1, processed prompts at
95 tok/s against stock Q4_K_M's 225 on x86.  So every type's speed on the target is known before the allocation:

- on this machine, measured: each per-type ``--pure`` file tune already writes is timed with ``llama-bench``
  (``TIMING``: prompt and generation, every file once a round, rounds in alternating order, so the VM's drift hits
  every type alike), cached beside the per-type files; where the rounds of a file differ by more than
  ``SPREAD_BUSY`` the machine is busy and the kernel table's prediction is used instead (and said);
- for another device, predicted from ``plan.kernels``' factors of its kind.

A tensor then costs its type's time per byte in generation (it reads them once a token) and per weight in prompts
(it multiplies them; the output matrix works on one position of a prompt's batch, ``speed.multiplied``), solved
from the files' real contents (a per-type file holds Q8_0 stand-ins where its type falls back); a type the stock
recipe uses but no file holds is scaled from the timed ones by the kernel table.  ``allocate_within`` prices that
time with a second Lagrange multiplier ``μ``, raised until the recipe's predicted pp and tg time are both at most
the stock recipe's (÷ ``min_speed``); ``spend`` then gives the bytes and time that price left unused to the
tensors that gain most from them.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..compute import for_resolved
from ..files import write_json_atomic
from ..llamacpp import find_toolchain, json_array, run_tool
from ..planning import kernels
from ..planning.size import predict_size, tensor_bytes, tensor_types
from ..planning.source import from_gguf
from ..planning.speed import multiplied
from ..sources.gguf import ties_output
from ..sources.gguf_header import read_header
from ..system import default_threads
from .allocate import Allocation, Allowed, allocate, padded
from .sensitivity import Calibration, TensorCost, load_json

# A first round warms the page cache and the CPU's clocks, so it runs low, and is not kept.
TIMING = {"n_prompt": 64, "n_gen": 16, "rounds": 3, "warmup": 1}
# The verification's figures are the ones a user reads, of three or four files: longer runs, more rounds.
VERIFY_TIMING = {"n_prompt": 128, "n_gen": 32, "rounds": 5, "warmup": 1}
SPREAD_BUSY = 0.20  # as bench.noise: timings whose rounds differ more than this fall back to the kernel table


@dataclass
class TypeSpeed:
    """Seconds per prompt token and per generated token of one pure file, and what it holds."""

    pp_s: float
    tg_s: float
    bytes: int  # of its quantizable tensors
    weights: int
    spread: float = 0.0  # the widest of its pp and tg samples' (max − min) ÷ median: noise of the timing
    # {type: (bytes, weights)} the file really holds: a per-type file keeps the tensors its type falls back on
    # as Q8_0 stand-ins, so its time is not all its type's.  None: all of it is the key's type.
    mix: dict[str, tuple[int, int]] | None = None


def time_types(files: dict[str, Path], quantizable: set[str], cache: Path, threads: int | None,
               device: str = "cpu", timing: dict[str, int] = TIMING) -> dict[str, TypeSpeed]:
    """Each per-type file timed here with llama-bench on ``device`` (resolved), interleaved; cached by file name,
    size and device (a CPU timing is no Metal one)."""
    cached = load_json(cache) or {}
    on = "" if device == "cpu" else f":{device}"  # the CPU's keys as before this field: caches stay valid
    key = {k: f"{p.name}:{p.stat().st_size}{on}" for k, p in files.items()}
    # Figures that are compared are measured in one run, interleaved: one file new to the cache re-times them all
    # (a cached stock file against a tuned one timed later would compare two states of the VM).
    todo = list(files) if any(cached.get(k, {}).get("key") != key[k] for k in files) else []
    samples: dict[str, dict[str, list[float]]] = {k: {"pp": [], "tg": []} for k in todo}
    exe = find_toolchain().tool("llama-bench")
    common = ["-t", str(threads or default_threads()), "-r", "1", "-o", "json",
              *for_resolved(device).tool_args("llama-bench")]
    for rnd in range(-timing["warmup"], timing["rounds"]) if todo else ():
        for k in todo if rnd % 2 == 0 else todo[::-1]:
            # One process a file and round measures both tests: half the loads and warm-ups of one per test.
            out = run_tool([exe, "-m", str(files[k]), *common, "-p", str(timing["n_prompt"]), "-n",
                            str(timing["n_gen"])], name="llama-bench", tail_lines=100000)
            for test in json_array(out) if rnd >= 0 else ():
                samples[k]["tg" if test.get("n_gen") else "pp"].append(float(test["avg_ts"]))
    for k in todo:
        h = read_header(files[k])
        qt = [t for t in h.tensors if t.name in quantizable]
        cached[k] = {"key": key[k], "pp_tps": statistics.median(samples[k]["pp"]),
                     "tg_tps": statistics.median(samples[k]["tg"]), "samples": samples[k],
                     "bytes": sum(tensor_bytes(t.shape, t.type) for t in qt), "weights": sum(t.n_elements for t in qt)}
    if todo:
        write_json_atomic(cache, cached)
    return {k: TypeSpeed(1 / cached[k]["pp_tps"], 1 / cached[k]["tg_tps"], cached[k]["bytes"], cached[k]["weights"],
                         max(_spread(xs) for xs in cached[k]["samples"].values()), _mix(files[k], quantizable))
            for k in files}


def _mix(path: Path, quantizable: set[str]) -> dict[str, tuple[int, int]]:
    """{type: (bytes read per generated token, weights multiplied per prompt token)} of a file's ``quantizable``."""
    tensors = read_header(path).tensors
    tied = ties_output(tensors)
    out: dict[str, tuple[int, int]] = {}
    for t in tensors:
        if t.name in quantizable:
            in_pp, in_tg = multiplied(t.name, tied)
            b, w = out.get(t.type, (0, 0))
            out[t.type] = (b + tensor_bytes(t.shape, t.type) * in_tg, w + t.n_elements * in_pp)
    return out


def _spread(xs: list[float]) -> float:
    return (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 and statistics.median(xs) else 0.0


def predicted_types(types: set[str], kind: str) -> dict[str, TypeSpeed]:
    """Per-type speeds on a device of ``kind`` from ``plan.kernels`` (relative: only ratios matter here)."""
    return {t: TypeSpeed(1 / kernels.factors(kind, t)[1], 1 / kernels.factors(kind, t)[0], 1, 1) for t in types}


Costs = Callable[[str, list[int], str], tuple[float, float]]


def per_unit(speeds: dict[str, TypeSpeed], kind: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """({type: pp seconds per weight}, {type: tg seconds per byte}).  Each file's time is the sum over the types it
    really holds (``TypeSpeed.mix``), solved for every type by least squares (a rate that comes out ≤ 0, which
    only noise can make, is dropped); a type no file holds
    (one the stock recipe uses but the allocation may not) runs at the timed types' rates × their kernel factors
    relative to its own on ``kind`` (``plan.kernels``)."""
    import numpy as np

    mixes = {k: s.mix or {k: (s.bytes, s.weights)} for k, s in speeds.items()}
    types = sorted({t for m in mixes.values() for t in m})
    out = []
    for col, field, axis in ((1, "pp_s", 1), (0, "tg_s", 0)):
        a = np.array([[float(mixes[k].get(t, (0, 0))[col]) for t in types] for k in speeds])
        b = np.array([getattr(s, field) for s in speeds.values()])
        scale = a.max(axis=0, initial=1.0)  # columns of bytes and of weights, brought to one scale
        x = np.linalg.lstsq(a / scale, b, rcond=None)[0] / scale
        rate = {t: float(v) for t, v in zip(types, x) if v > 0}
        ref = {t: v * kernels.factors(kind, t)[axis] for t, v in rate.items()}  # Q4_0-equivalent seconds
        out.append((rate, statistics.median(ref.values()) if ref else 1.0, axis))
    (pp, pp_ref, _), (tg, tg_ref, _) = out
    return ({**{t: pp_ref / kernels.factors(kind, t)[1] for t in _all_types(kind)}, **pp},
            {**{t: tg_ref / kernels.factors(kind, t)[0] for t in _all_types(kind)}, **tg})


def _all_types(kind: str | None) -> list[str]:
    return list(kernels.TABLES.get(kind or "", kernels.X86))


def tensor_time(speeds: dict[str, TypeSpeed], kind: str | None = None, *, tied: bool = True) -> Costs:
    """(pp s, tg s) of one tensor (name, shape, type): its bytes at its type's seconds per byte, its weights at
    seconds per weight (``per_unit``), where a token multiplies it (``speed.multiplied``; ``tied``: the model has
    no output.weight)."""
    pp, tg = per_unit(speeds, kind)

    def cost(name: str, shape: list[int], ty: str) -> tuple[float, float]:
        n = 1
        for d in shape:
            n *= d
        f = kernels.factors(kind, ty)
        in_pp, in_tg = multiplied(name, tied)
        return (n * pp.get(ty, pp.get("Q4_0", 0.0) / f[1]) * in_pp,
                tensor_bytes(shape, ty) * tg.get(ty, tg.get("Q4_0", 0.0) / f[0]) * in_tg)
    return cost


def recipe_time(costs: list[TensorCost], types: dict[str, str], cost: Costs) -> tuple[float, float]:
    pp = tg = 0.0
    for c in costs:
        a, b = cost(c.name, c.shape, types[c.name])
        pp, tg = pp + a, tg + b
    return pp, tg


def allocate_within(costs: list[TensorCost], cal: Calibration, budget: int, *, allowed: Allowed, alignment: int,
                    cost: Costs, limit: tuple[float, float]) -> tuple[Allocation, bool]:
    """The least predicted KLD within ``budget`` whose pp and tg time are at most ``limit``; (allocation, met).
    Not met even at the highest price of time: the fastest recipe found, and False."""
    def run(mu: float) -> tuple[Allocation, bool]:
        adj = []
        for c in costs:
            coef = max(cal.coefficients[c.group], 1e-12)
            adj.append(TensorCost(c.name, c.group, c.shape, {
                t: e + mu * sum(x / lim for x, lim in zip(cost(c.name, c.shape, t), limit)) / coef
                for t, e in c.errors.items()}))
        a = allocate(adj, cal, budget, allowed=allowed, alignment=alignment)
        pp, tg = recipe_time(costs, a.types, cost)
        kld = sum(cal.coefficients[c.group] * c.errors[a.types[c.name]] for c in costs) + cal.coefficients.get("floor", 0.0)
        return Allocation(a.types, a.tensor_bytes, kld), pp <= limit[0] * (1 + 1e-9) and tg <= limit[1] * (1 + 1e-9)

    first = run(0.0)
    if first[1]:
        return first
    lo, hi = 0.0, 1e-9
    best = run(hi)
    while not best[1] and hi < 1e6:
        lo, hi = hi, hi * 4
        best = run(hi)
    if not best[1]:
        return best[0], False
    for _ in range(30):
        mid = (lo + hi) / 2
        got = run(mid)
        if got[1]:
            hi, best = mid, got
        else:
            lo = mid
    return spend(best[0], costs, cal, budget, allowed=allowed, alignment=alignment, cost=cost, limit=limit), True


def spend(alloc: Allocation, costs: list[TensorCost], cal: Calibration, budget: int, *, allowed: Allowed,
          alignment: int, cost: Costs, limit: tuple[float, float]) -> Allocation:
    """``alloc`` improved one tensor at a time while bytes, pp and tg stay within ``budget`` and ``limit``.

    One price of time makes every like tensor choose alike, so the cheapest price that meets the floor can jump
    to a recipe far inside both the floor and the budget.  The slack is spent here:
    each step takes the change of type that saves the most predicted KLD per share of the bytes and time it adds."""
    types = dict(alloc.types)
    opts: dict[str, dict[str, tuple[float, int, float, float]]] = {}
    for c in costs:
        mine = allowed.get(c.name, set()) if isinstance(allowed, dict) else allowed
        coef = cal.coefficients[c.group]
        opts[c.name] = {t: (coef * e, padded(c.shape, t, alignment), *cost(c.name, c.shape, t))
                        for t, e in c.errors.items() if t in mine or t == types[c.name]}
    room = [float(budget), *limit]
    used = [sum(opts[n][t][i] for n, t in types.items()) for i in (1, 2, 3)]
    while True:
        best: tuple[float, str, str] | None = None
        for n, cur in types.items():
            now = opts[n][cur]
            for t, o in opts[n].items():
                saved = now[0] - o[0]
                delta = [o[i] - now[i] for i in (1, 2, 3)]
                if saved <= 0 or any(u + d > r * (1 + 1e-9) for u, d, r in zip(used, delta, room)):
                    continue
                gain = saved / (sum(max(d, 0.0) / r for d, r in zip(delta, room)) + 1e-12)
                if best is None or gain > best[0]:
                    best = (gain, n, t)
        if best is None:
            break
        _, n, t = best
        used = [u + opts[n][t][i] - opts[n][types[n]][i] for u, i in zip(used, (1, 2, 3))]
        types[n] = t
    return Allocation(types, int(used[0]), cal.coefficients.get("floor", 0.0) + sum(opts[n][t][0] for n, t in types.items()))


def stock_for(f16: Path, stock: tuple[str, ...], size: int) -> str:
    """The stock recipe of a file's size: the smallest at least as large (within 1%), else the largest."""
    spec = from_gguf(f16)
    sizes = sorted((predict_size(spec, q).file_size_bytes, q) for q in stock)
    return next((q for s, q in sizes if s >= size * 0.99), sizes[-1][1])


def cap(alloc: Allocation, costs: list[TensorCost], cal: Calibration, budget: int, *, allowed: Allowed,
        alignment: int, per_type: dict[str, Path], f16: Path, stock: tuple[str, ...], size: int, min_speed: float,
        here: bool, kind: str, work: Path, threads: int | None, device: str = "cpu") -> tuple[Allocation, dict[str, object]]:
    """``alloc`` made no slower than the stock recipe of its size (× ``min_speed``), and what was done."""
    names = {c.name for c in costs}
    if here:
        speeds = time_types(per_type, names, work / "type-speeds.json", threads, device)
        source = "measured here (llama-bench on the per-type files)"
        worst = max(speeds.values(), key=lambda s: s.spread)
        if worst.spread > SPREAD_BUSY:  # a busy machine: timings that spread so are noise; the table is not
            speeds = predicted_types({t for c in costs for t in c.errors}, kind)
            source = (f"predicted ({kernels.SOURCES[kind]}): the per-type timings here spread up to "
                      f"{worst.spread:.0%}, a busy machine")
    else:
        speeds = predicted_types({t for c in costs for t in c.errors}, kind)
        source = f"predicted for the device ({kernels.SOURCES[kind]})"
    spec = from_gguf(f16)
    cost = tensor_time(speeds, kind, tied=ties_output(spec.tensors))
    q = stock_for(f16, stock, size)
    stock_types = {t.name: ty for t, ty in zip(spec.tensors, tensor_types(spec, q)) if t.name in names}
    s_pp, s_tg = recipe_time(costs, stock_types, cost)
    limit = (s_pp / min_speed, s_tg / min_speed)
    pp, tg = recipe_time(costs, alloc.types, cost)
    info: dict[str, object] = {"stock": q, "min_speed": min_speed, "source": source,
                               "kld_only": {"pp_ratio": round(s_pp / pp, 3), "tg_ratio": round(s_tg / tg, 3),
                                            "predicted_kld": alloc.predicted_kld}}
    if pp <= limit[0] and tg <= limit[1]:
        info.update(met=True, changed=False, pp_ratio=info["kld_only"]["pp_ratio"],  # type: ignore[index]
                    tg_ratio=info["kld_only"]["tg_ratio"])  # type: ignore[index]
        return alloc, info
    out, met = allocate_within(costs, cal, budget, allowed=allowed, alignment=alignment, cost=cost, limit=limit)
    pp, tg = recipe_time(costs, out.types, cost)
    info.update(met=met, changed=True, pp_ratio=round(s_pp / pp, 3), tg_ratio=round(s_tg / tg, 3))
    return out, info
