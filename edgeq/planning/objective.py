"""How a pick is made: a named objective over a table of candidates, with noise and the Pareto front.

``--prefer`` names the objective; every candidate has already passed the constraints (it fits, ``--min-tps``,
``--max-kld``):

- ``speed`` (the default): the fastest generation at the target, among the candidates whose KLD is within the
  quality bound (``--max-kld``, else ``NEAR_LOSSLESS_KLD``); prompt speed next, then the lower KLD, then RAM.
- ``quality``: the least KLD (edgeq's only rule before issue 33); then speed, then RAM.
- ``size``: the least RAM at the target within the same quality bound; then speed, then KLD.

Two speeds whose ranges overlap are equal: a measured figure's range is its repetitions' min–max, a predicted
one's ``PREDICTED_BAND`` either side.  Then the next criterion decides, and the pick says so.  A candidate is
*dominated* when another has a KLD no higher and is faster beyond noise: no objective should pick it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

PREFERENCES = ("speed", "quality", "size")
DEFAULT_PREFER = "speed"
# Near-lossless: llama.cpp's Llama-3-8B table puts Q8_0 at KLD 0.0014 and Q6_K at 0.0055 (ΔPPL +0.02), Q5_K_M at
# 0.0108 (+0.06, under 1% of PPL) and Q4_K_M at 0.031 (+0.18); edgeq measured Q8_0 at 0.0010–0.0041 and Q6_K at
# 0.0017 on its models, and stock Q4_K_M at 0.032–0.052 (README, "what quantization costs").  0.01 keeps the
# 8- and 6-bit files and leaves out the 4-bit ones, whose top token differs from full precision's at 12–15%
# of positions on the embedded model.
NEAR_LOSSLESS_KLD = 0.01
# A predicted speed's band for noise: the calibrated plan's accuracy (README, "How close the plan gets").
PREDICTED_BAND = 0.05


class Entry(Protocol):
    """What the objective reads of a candidate (``recommend.Candidate`` is one)."""

    quant: str
    kld: float | None
    tg_tps: float
    total_bytes: int

    @property
    def tg_range(self) -> tuple[float, float]: ...

    @property
    def pp_range(self) -> tuple[float, float] | None: ...

    @property
    def pp(self) -> float | None: ...


def band(value: float, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """A figure's range: its measured min–max, or ``PREDICTED_BAND`` either side of a prediction."""
    if low is not None and high is not None:
        return (min(low, value), max(high, value))
    return (value * (1 - PREDICTED_BAND), value * (1 + PREDICTED_BAND))


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _kld(e: Entry) -> float:
    return e.kld if e.kld is not None else math.inf


def dominated_by(entries: Sequence[Entry]) -> dict[str, str | None]:
    """Per candidate, one that dominates it (a KLD no higher and faster beyond noise), or None: the Pareto front of
    quality vs generation speed is the candidates with None."""
    out: dict[str, str | None] = {}
    for e in entries:
        better = [f for f in entries if f is not e and _kld(f) <= _kld(e) and f.tg_range[0] > e.tg_range[1]]
        out[e.quant] = max(better, key=lambda f: f.tg_tps).quant if better else None
    return out


Criterion = tuple[str, Callable[[Entry], float], Callable[[Entry], tuple[float, float] | None]]
# (name, key to minimise, the range within which two candidates are equal: None = exact)
_TG: Criterion = ("generation speed", lambda e: -e.tg_tps, lambda e: e.tg_range)
_PP: Criterion = ("prompt speed", lambda e: -(e.pp or 0.0), lambda e: e.pp_range)
_KLD: Criterion = ("KLD", _kld, lambda e: None)
_RAM: Criterion = ("RAM", lambda e: float(e.total_bytes), lambda e: None)
ORDER = {"speed": (_TG, _PP, _KLD, _RAM), "quality": (_KLD, _TG, _PP, _RAM), "size": (_RAM, _TG, _PP, _KLD)}


@dataclass
class Choice:
    best: Entry
    ties: list[str]  # the candidates equal to it within noise on the criterion that was not decisive
    decided_by: str  # the criterion that told it from them ("" when nothing was tied)
    tied_on: str  # the criterion they were equal on


def choose(pool: Sequence[Entry], prefer: str) -> Choice:
    """The best of ``pool`` (non-empty) by ``prefer``'s criteria, each applied to the candidates the previous left
    equal within noise; never one that another in ``pool`` dominates (ranges that overlap are not transitive: a
    pick within noise of the fastest can still be slower, beyond noise, than a third of no more KLD)."""
    ch = _criteria(pool, prefer)
    while True:
        over = [f for f in pool if f is not ch.best and _kld(f) <= _kld(ch.best)
                and f.tg_range[0] > ch.best.tg_range[1]]
        if not over:
            return ch
        ch = Choice(max(over, key=lambda f: f.tg_tps), ch.ties, ch.decided_by, ch.tied_on)


def _criteria(pool: Sequence[Entry], prefer: str) -> Choice:
    left = list(pool)
    tied: list[Entry] = []
    tied_on = ""
    for name, key, rng in ORDER[prefer]:
        top = min(left, key=key)
        r = rng(top)
        same = [e for e in left if (key(e) == key(top) if r is None else (rng(e) is not None and overlap(r, rng(e))))]  # type: ignore[arg-type]
        if len(same) == 1:
            return Choice(top, [e.quant for e in tied if e is not top], name if tied else "", tied_on)
        if not tied:
            tied, tied_on = same, name
        left = same
    best = min(left, key=ORDER[prefer][0][1])
    return Choice(best, [e.quant for e in tied if e is not best], "", tied_on)


def within_bound(pool: Sequence[Entry], bound: float) -> list[Entry]:
    return [e for e in pool if e.kld is not None and e.kld <= bound]
