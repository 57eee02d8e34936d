"""Pick the quant (or, with --largest, the model and quant) to ship, and say why in one sentence."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UsageError

GIB = 1024**3


@dataclass
class Candidate:
    model: str
    quant: str
    parameters: int
    total_bytes: int  # predicted RAM that must fit
    budget_bytes: int  # usable RAM minus headroom
    tg_tps: float
    kld: float | None

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes


@dataclass
class Recommendation:
    ok: bool
    model: str | None
    quant: str | None
    sentence: str
    closest_model: str | None = None
    closest_quant: str | None = None


def check_asks(min_tps: float | None, max_kld: float | None) -> None:
    """Refuse asks no candidate could meet, before anything is planned or made: a speed or a KLD that is not a
    finite number above zero."""
    if min_tps is not None and not (math.isfinite(min_tps) and min_tps > 0):
        raise UsageError(f"--min-tps {min_tps:g}: expected a speed above 0 tokens per second.",
                         hint="Example: --min-tps 10; leave it out to ask for no speed.")
    if max_kld is not None and not (math.isfinite(max_kld) and max_kld > 0):
        raise UsageError(f"--max-kld {max_kld:g}: expected a KLD above 0 (0 is met by no quantized file).",
                         hint="Example: --max-kld 0.02; leave it out to ask for no quality bound.")


def misses(c: Candidate, min_tps: float | None, max_kld: float | None) -> list[str]:
    """Why ``c`` does not qualify, one phrase per unmet requirement."""
    out = []
    if not c.fits:
        out.append(f"needs {c.total_bytes / GIB:.2f} GiB of {c.budget_bytes / GIB:.2f} GiB")
    if min_tps is not None and c.tg_tps < min_tps:
        out.append(f"{c.tg_tps:.1f} tok/s < {min_tps:g}")
    if max_kld is not None and (c.kld is None or c.kld > max_kld):
        out.append("KLD unknown" if c.kld is None else f"KLD {c.kld:.3f} > {max_kld:g}")
    return out


def _shortfall(c: Candidate, min_tps: float | None, max_kld: float | None) -> float:
    """How far from qualifying, as a sum of log ratios (0 = qualifies)."""
    s = max(0.0, math.log(c.total_bytes / max(1, c.budget_bytes)))
    if min_tps:
        s += max(0.0, math.log(min_tps / max(c.tg_tps, 1e-9)))
    if max_kld:
        s += max(0.0, math.log((c.kld if c.kld is not None else 1.0) / max_kld))
    return s


def _quality_key(c: Candidate) -> tuple[float, float]:
    # Lower KLD is better; unknown KLD ranks by bits (more bytes per parameter, less loss).
    return (c.kld if c.kld is not None else math.inf, -c.total_bytes / max(1, c.parameters))


def recommend(cands: list[Candidate], *, min_tps: float | None = None, max_kld: float | None = None,
              largest: bool = False) -> Recommendation:
    """Best quality among those that fit and meet the asks (largest model first with ``largest``)."""
    if not cands:
        return Recommendation(False, None, None, "nothing to choose from: no quant was planned.")
    good = [c for c in cands if not misses(c, min_tps, max_kld)]
    if good:
        pool = good
        if largest:
            top = max(c.parameters for c in good)
            pool = [c for c in good if c.parameters == top]
        best = min(pool, key=_quality_key)
        asks = [f"fits in {best.budget_bytes / GIB:.2f} GiB (needs {best.total_bytes / GIB:.2f} GiB)"]
        if min_tps is not None:
            asks.append(f"runs at ~{best.tg_tps:.0f} tok/s (≥ {min_tps:g} asked)")
        kld = f"KLD {best.kld:.4f}" if best.kld is not None else "quality unknown"
        what = f"{best.model} {best.quant}" if largest else best.quant
        lead = "the largest model and best quality" if largest else "the best quality"
        return Recommendation(True, best.model, best.quant,
                              f"{what}: {lead} ({kld}) that {' and '.join(asks)}.")
    near = min(cands, key=lambda c: (_shortfall(c, min_tps, max_kld), _quality_key(c)))
    what = f"{near.model} {near.quant}" if largest else near.quant
    return Recommendation(False, None, None,
                          f"nothing qualifies; the closest is {what} ({', '.join(misses(near, min_tps, max_kld))}).",
                          near.model, near.quant)
