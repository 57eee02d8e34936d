"""Cross-check our figures with llama.cpp's own `llama-bench` on the same files and threads."""
from __future__ import annotations

import statistics
from dataclasses import replace

from ..compute import for_resolved
from ..llamacpp import find_toolchain, json_array, run_tool
from .prompts import DEFAULT_PROMPTS
from .results import LlamaBenchCheck, RunResult, RunSpec
from .runs import run_worker

TOLERANCE = 0.10


def llama_bench_args(path: str, *, threads: int, reps: int, device: str) -> list[str]:
    """llama-bench's arguments for ``path`` on ``device`` (resolved): the layers and op offload edgeq's own run
    used, never the tool's default (every layer on Metal on a Mac, whatever edgeq ran on)."""
    return ["-m", path, "-t", str(threads), "-r", str(reps), "-o", "json", *for_resolved(device).tool_args("llama-bench")]


def llama_bench(path: str, *, threads: int, n_prompt: int, n_gen: int, reps: int,
                device: str = "cpu") -> tuple[list[float], list[float]]:
    """Samples of (pp tok/s from an empty context, tg tok/s at depth n_prompt), as llama-bench measures them."""
    exe = find_toolchain().tool("llama-bench")
    common = llama_bench_args(path, threads=threads, reps=reps, device=device)
    pp = run_tool([exe, *common, "-p", str(n_prompt), "-n", "0"], name="llama-bench", tail_lines=100000)
    tg = run_tool([exe, *common, "-p", "0", "-n", str(n_gen), "-d", str(n_prompt)], name="llama-bench",
                  tail_lines=100000)
    return _samples(pp), _samples(tg)


def _samples(lines: list[str]) -> list[float]:
    return [float(x) for x in json_array(lines)[0]["samples_ts"]]


def cross_check(runs: list[RunResult], *, threads: int, n_prompt: int, n_gen: int, reps: int) -> list[LlamaBenchCheck]:
    """Each batch-1 llama.cpp file: our worker and llama-bench, alternated ``reps`` times.

    Alternating puts both under the same machine speed; this VM drifts ±20% in
    minutes, so comparing against figures taken earlier would measure the drift.
    """
    seen, out = set(), []
    for r in runs:
        if r.backend != "llama.cpp" or r.batch != 1 or r.status != "ok" or r.path in seen:
            continue
        seen.add(r.path)
        spec = RunSpec(r.model, r.path, r.backend, r.variant, r.device, threads, 1, n_prompt, n_gen, 1,
                       {r.prompt: _prompt_text(r.prompt)})
        ours_pp, ours_tg, lb_pp, lb_tg = [], [], [], []
        for _ in range(reps):
            (mine,) = run_worker(replace(spec))
            if mine.status != "ok" or not mine.pp_tps or not mine.tg_tps:
                break
            ours_pp += mine.pp_tps.samples
            ours_tg += mine.tg_tps.samples
            pp, tg = llama_bench(r.path, threads=threads, n_prompt=n_prompt, n_gen=n_gen, reps=1, device=r.device)
            lb_pp += pp
            lb_tg += tg
        if not ours_pp:
            continue
        m = statistics.median
        pd, td = m(ours_pp) / m(lb_pp) - 1, m(ours_tg) / m(lb_tg) - 1
        out.append(LlamaBenchCheck(r.variant, round(m(ours_pp), 2), round(m(ours_tg), 2), round(m(lb_pp), 2),
                                   round(m(lb_tg), 2), round(pd, 3), round(td, 3),
                                   abs(pd) <= TOLERANCE and abs(td) <= TOLERANCE))
    return out


def _prompt_text(name: str) -> str:
    return DEFAULT_PROMPTS.get(name, DEFAULT_PROMPTS["en"])
