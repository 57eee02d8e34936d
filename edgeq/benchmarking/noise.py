"""Is the machine visibly busy?  Decisions made from speeds measured on a busy machine say so (issue 33).

Two signs, either enough: a run's repetitions spread by more than ``SPREAD_BUSY`` (max − min over the median),
or the load average, less the threads the bench itself runs, at least ``LOAD_BUSY`` of the cores: other work
was taking the cores the runs were measured on.
"""
from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

from .results import RunResult

SPREAD_BUSY = 0.20  # the drift bench's bandwidth warning uses too
LOAD_BUSY = 0.5  # of the cores, taken by other processes


def load_now() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return None


def spread(r: RunResult) -> float | None:
    """A run's tg spread, (max − min) ÷ median, over its repetitions; None with fewer than two."""
    s = r.tg_tps
    if r.status != "ok" or s is None or len(s.samples) < 2 or not s.median:
        return None
    return (s.max - s.min) / s.median


def busy_reason(runs: Sequence[RunResult], loads: Sequence[float | None], *, cores: int, threads: int) -> str | None:
    """One line saying why the measurements are noisy, or None when nothing shows it."""
    why = []
    spreads = [(x, r.variant) for r in runs if (x := spread(r)) is not None]
    if spreads:
        worst, variant = max(spreads)
        if worst > SPREAD_BUSY:
            why.append(f"{variant}'s generation speed spread {worst:.0%} over its repetitions")
    seen = [x for x in loads if x is not None]
    if seen and cores:
        others = statistics.median(seen) - threads
        if others >= LOAD_BUSY * cores:
            why.append(f"other processes kept a load of about {others:.1f} on {cores} cores")
    if not why:
        return None
    return "the machine was busy (" + "; ".join(why) + "): speed differences within that spread are noise."
