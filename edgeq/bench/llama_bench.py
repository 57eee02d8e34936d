"""Cross-check our figures with llama.cpp's own `llama-bench` on the same files and threads."""
from __future__ import annotations

import json

from ..toolchain import find_toolchain, run_tool
from .results import LlamaBenchCheck, RunResult

TOLERANCE = 0.10


def llama_bench(path: str, *, threads: int, n_prompt: int, n_gen: int, reps: int) -> tuple[float, float]:
    """(pp tok/s from empty context, tg tok/s after n_prompt tokens), as llama-bench measures them."""
    exe = find_toolchain().tool("llama-bench")
    pp = run_tool([exe, "-m", path, "-p", str(n_prompt), "-n", "0", "-t", str(threads), "-r", str(reps),
                   "-o", "json"], name="llama-bench", tail_lines=100000)
    tg = run_tool([exe, "-m", path, "-p", "0", "-n", str(n_gen), "-d", str(n_prompt), "-t", str(threads),
                   "-r", str(reps), "-o", "json"], name="llama-bench", tail_lines=100000)
    return _avg_ts(pp), _avg_ts(tg)


def _avg_ts(lines: list[str]) -> float:
    text = "\n".join(lines)
    start = text.index("[")  # llama-bench may print log lines before the JSON array
    return float(json.loads(text[start:text.rindex("]") + 1])[0]["avg_ts"])


def cross_check(runs: list[RunResult], *, threads: int, n_prompt: int, n_gen: int, reps: int) -> list[LlamaBenchCheck]:
    """Batch-1 llama.cpp runs (first prompt of each file) against llama-bench."""
    seen, out = set(), []
    for r in runs:
        if r.backend != "llama.cpp" or r.batch != 1 or r.status != "ok" or r.path in seen or r.device != "cpu":
            continue
        seen.add(r.path)
        pp, tg = llama_bench(r.path, threads=threads, n_prompt=n_prompt, n_gen=n_gen, reps=reps)
        assert r.pp_tps and r.tg_tps
        pd, td = r.pp_tps.median / pp - 1, r.tg_tps.median / tg - 1
        out.append(LlamaBenchCheck(r.variant, r.pp_tps.median, r.tg_tps.median, round(pp, 2), round(tg, 2),
                                   round(pd, 3), round(td, 3), abs(pd) <= TOLERANCE and abs(td) <= TOLERANCE))
    return out
