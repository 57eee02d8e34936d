"""How long the rest of a bench matrix will take: an estimate before it starts, measured times as it goes.

Before any run, a spec's time is guessed from the memory bandwidth edgeq-bandwidth
measured and the bytes of its weights (generation is memory-bound), with prompt
processing ``PP_OVER_TG`` times faster than generation and a load at ``LOAD_BYTES_PER_S``.
The guess is rough and is shown as such; once a spec has run, its measured time
replaces it (less the load, for rounds its live worker answers without loading).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .results import RunResult, RunSpec, weight_file_bytes

# Generation speed as a share of bandwidth ÷ the weights' bytes (a GGUF's size; a checkpoint's as loaded:
# twice its 16-bit files for fp32), how much faster prompt processing is per token, and load speeds: rough
# priors from the 0.5B matrix on a 2-core EPYC (benchmarks/results/matrix.json, "timing"), used only
# until a spec's first round has been timed.
TG_EFFICIENCY = {"llama.cpp": 0.7, "fp32": 0.35, "bf16": 0.3, "bnb-int8": 0.25, "bnb-nf4": 0.35}
PP_OVER_TG = 10.0
LOAD_BYTES_PER_S = {"llama.cpp": 1e9, "transformers": 2.5e8}
LOAD_FIXED_S = {"llama.cpp": 0.5, "transformers": 4.0}
WARMUP_TOKENS = 4  # the worker's warm-up: the whole prompt, then this many tokens


def _weight_bytes(spec: RunSpec) -> int:
    """The weights' bytes as loaded: fp32 widens a 16-bit checkpoint to twice its files."""
    return weight_file_bytes(spec) * (2 if spec.variant == "fp32" and Path(spec.path).is_dir() else 1)


def prior(spec: RunSpec, bandwidth_gbps: float | None) -> tuple[float, float]:
    """(load seconds, seconds per round) guessed for ``spec`` before it has run."""
    nbytes = _weight_bytes(spec)
    key = spec.backend if spec.backend == "llama.cpp" else spec.variant
    tg_tps = TG_EFFICIENCY.get(key, 0.1) * (bandwidth_gbps or 10) * 1e9 / max(nbytes, 1) * spec.batch
    pp_s = spec.batch * spec.n_prompt / (PP_OVER_TG * tg_tps)
    # Each round: per prompt, the warm-up and one timed repetition (``WorkerPool`` asks for reps=1 a round).
    per_prompt = 2 * pp_s + spec.batch * (min(WARMUP_TOKENS, spec.n_gen) + spec.n_gen) / tg_tps
    load = LOAD_FIXED_S.get(spec.backend, 2.0) + nbytes / LOAD_BYTES_PER_S.get(spec.backend, 5e8)
    return load, per_prompt * len(spec.prompts)


@dataclass
class _Timing:
    load_s: float
    round_s: float
    measured: bool = False


class ETA:
    """Seconds left in a matrix of ``specs`` × ``rounds``, visited round by round in spec order."""

    def __init__(self, specs: list[RunSpec], rounds: int, bandwidth_gbps: float | None, *,
                 per_round_s: float = 0.0) -> None:
        self.specs, self.rounds, self.per_round_s = specs, rounds, per_round_s
        self.timing = [_Timing(*prior(s, bandwidth_gbps)) for s in specs]
        self.seconds: list[list[float]] = [[] for _ in specs]  # each round's whole time, load included

    def record_rows(self) -> list[dict[str, object]]:
        """What each spec's rounds took (for the results' ``timing``)."""
        return [{"backend": s.backend, "variant": s.variant, "batch": s.batch, "load_s": round(t.load_s, 2),
                 "rounds_s": [round(x, 2) for x in xs]} for s, t, xs in zip(self.specs, self.timing, self.seconds)]

    def record(self, i: int, seconds: float, rows: list[RunResult], *, loaded: bool) -> None:
        """Spec ``i`` took ``seconds`` this round (``loaded``: including a load)."""
        self.seconds[i].append(seconds)
        ok = [r for r in rows if r.status == "ok"]
        t = self.timing[i]
        if not ok:  # skipped or failed: about as quick next time
            t.load_s, t.round_s, t.measured = 0.0, seconds, True
            return
        load = (ok[0].load_s or 0.0) if loaded else 0.0
        if loaded:
            t.load_s = load
        t.round_s, t.measured = max(0.0, seconds - load), True

    def left(self, rnd: int, i: int, *, live: set[int] | None = None) -> float:
        """Seconds after spec ``i`` of round ``rnd`` is done; ``live``: specs whose workers need no load."""
        loaded = set(live or ())
        n = len(self.timing)
        total = 0.0
        for pos in range(rnd * n + i + 1, self.rounds * n):
            j = pos % n
            total += self.timing[j].round_s + (0.0 if j in loaded else self.timing[j].load_s)
            loaded.add(j)  # kept alive after its load (the pool stops it only when memory is short)
        return total + (self.rounds - rnd) * self.per_round_s  # the reading after this round and each later one

    def total(self) -> float:
        """The whole matrix, before it starts (every spec loads once)."""
        return sum(t.load_s + self.rounds * t.round_s for t in self.timing) + self.rounds * self.per_round_s

    @property
    def guessed(self) -> bool:
        """Whether any spec's time is still a guess."""
        return not all(t.measured for t in self.timing)


def human_seconds(s: float) -> str:
    """``45 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = max(0, round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
